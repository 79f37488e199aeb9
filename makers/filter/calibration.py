"""Calibration tracking of the ML filter and the per-generator budget split.

Pure functions over numpy arrays, tested on constructed cases:

* :func:`calibration_report` compares what the filter predicted for the
  candidates the oracle evaluated (ensemble mean and spread, eV/atom) with what
  the oracle found: interval coverage, errors, and the quality of the
  stable/unstable calls (precision, recall, F1, discovery-acceleration factor).
* :func:`generator_budget_split` turns the hit rates the generators achieved in
  earlier rounds into this round's budget per generator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np

logger = logging.getLogger(__name__)

#: Mean |z| of a standard normal, sqrt(2/pi): what a calibrated spread gives.
CALIBRATED_MEAN_ABS_Z = math.sqrt(2.0 / math.pi)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


def classification_metrics(
    predicted: np.ndarray, oracle: np.ndarray, *, threshold: float = 0.0
) -> dict[str, float]:
    """Precision, recall, F1 and DAF of "stable" calls.

    A candidate is called stable when ``predicted <= threshold`` and is stable
    when ``oracle <= threshold`` (both e.g. energies above the hull, eV/atom).

    Parameters
    ----------
    predicted, oracle : numpy.ndarray
        Shape ``(n,)``, eV/atom.
    threshold : float
        Stability threshold, eV/atom.

    Returns
    -------
    dict
        ``tp, fp, fn, tn`` (counts), ``precision = tp/(tp+fp)``, ``recall =
        tp/(tp+fn)``, ``f1`` (harmonic mean; 0 when both are 0),
        ``base_rate`` = fraction of oracle-stable candidates, and ``daf`` =
        precision / base_rate, the discovery-acceleration factor: how many
        times more often a positive call is stable than a random pick from the
        same candidates.  Undefined ratios are NaN (no calls, no positives).
    """
    predicted = np.asarray(predicted, dtype=float)
    oracle = np.asarray(oracle, dtype=float)
    if predicted.shape != oracle.shape:
        raise ValueError(f"shapes differ: {predicted.shape} vs {oracle.shape}")
    call = predicted <= threshold
    true = oracle <= threshold
    tp = int(np.sum(call & true))
    fp = int(np.sum(call & ~true))
    fn = int(np.sum(~call & true))
    tn = int(np.sum(~call & ~true))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    if math.isnan(precision) or math.isnan(recall):
        f1 = float("nan")
    elif precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2.0 * precision * recall / (precision + recall)
    base_rate = _ratio(tp + fn, predicted.size)
    daf = precision / base_rate if base_rate > 0 else float("nan")
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "base_rate": base_rate,
        "daf": daf,
    }


def calibration_report(
    mean: np.ndarray,
    std: np.ndarray,
    oracle: np.ndarray,
    *,
    levels: Sequence[float] = (0.68, 0.95),
    threshold: float = 0.0,
    min_std: float = 1e-3,
) -> dict[str, float]:
    """Compare ensemble predictions with oracle values.

    Parameters
    ----------
    mean : numpy.ndarray
        Shape ``(n,)``: predicted value (ensemble mean), eV/atom.  Energies per
        atom or energies above the hull; ``oracle`` must be the same quantity.
    std : numpy.ndarray
        Shape ``(n,)``: predicted standard deviation (ensemble spread), eV/atom.
    oracle : numpy.ndarray
        Shape ``(n,)``: what the oracle found, eV/atom.
    levels : sequence of float
        Nominal probabilities of the central Gaussian intervals
        ``mean +- z_p * std`` whose observed coverage is reported.
    threshold : float
        Stability threshold for the classification metrics, eV/atom (use it
        with energies above the hull).
    min_std : float
        Floor on ``std``, eV/atom, so that z-scores stay finite.

    Returns
    -------
    dict
        ``n``; ``mae``, ``rmse``, ``bias`` (mean of predicted - oracle), eV/atom;
        ``mean_std`` (eV/atom); ``mean_abs_z`` (mean of |oracle - mean| / std;
        0.798 when calibrated, larger = overconfident); ``std_scale``: the
        factor by which the spread must be multiplied so the 68.27 % interval
        covers 68.27 % of the points (median |z| / 0.6745; > 1 = overconfident);
        ``coverage_<p>`` for each level ``p`` in per cent (e.g. ``coverage_68``,
        the observed fraction inside the nominal 68 % interval); and the
        metrics of :func:`classification_metrics` at ``threshold``.
    """
    mean = np.asarray(mean, dtype=float)
    std = np.asarray(std, dtype=float)
    oracle = np.asarray(oracle, dtype=float)
    if not mean.shape == std.shape == oracle.shape or mean.ndim != 1:
        raise ValueError("mean, std and oracle must be 1-D arrays of one length")
    if mean.size == 0:
        raise ValueError("no points to compare")
    err = mean - oracle
    sigma = np.maximum(std, min_std)
    abs_z = np.abs(err) / sigma
    report: dict[str, float] = {
        "n": int(mean.size),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "bias": float(np.mean(err)),
        "mean_std": float(np.mean(std)),
        "mean_abs_z": float(np.mean(abs_z)),
        "std_scale": float(np.median(abs_z) / NormalDist().inv_cdf(0.75)),
    }
    for level in levels:
        if not 0.0 < level < 1.0:
            raise ValueError(f"levels must be in (0, 1), got {level}")
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        key = f"coverage_{round(100 * level):d}"
        report[key] = float(np.mean(abs_z <= z))
    report.update(classification_metrics(mean, oracle, threshold=threshold))
    return report


# --------------------------------------------------------------------------- #
# Budget split across generators
# --------------------------------------------------------------------------- #
def _solve_quotas(
    rates: np.ndarray, lo: np.ndarray, hi: np.ndarray, total: float
) -> np.ndarray:
    """Real quotas ``clip(lam * rates, lo, hi)`` summing to ``total``.

    The sum is continuous and non-decreasing in ``lam``, so bisection finds
    the multiplier; callers guarantee ``sum(lo) <= total <= sum(hi)``.
    """

    def quotas(lam: float) -> np.ndarray:
        return np.clip(lam * rates, lo, hi)

    low, high = 0.0, 1.0
    while quotas(high).sum() < total:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if quotas(mid).sum() < total:
            low = mid
        else:
            high = mid
    return quotas(high)


def generator_budget_split(
    hit_counts: Mapping[str, tuple[int, int]],
    budget: int,
    *,
    prior: tuple[float, float] = (1.0, 1.0),
    min_share: float = 0.05,
    available: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Split a round's oracle budget across generators by their hit rates.

    Each generator's hit rate is its Beta-smoothed posterior mean
    ``(hits + a) / (evaluated + a + b)`` with ``prior = (a, b)``, so a generator
    never tried gets the prior mean ``a / (a + b)`` and a few lucky hits do not
    take over the budget.  Quotas are proportional to these rates, except that
    every generator gets at least ``ceil(min_share * budget)`` (exploration:
    a generator that did badly early keeps being measured) and at most what it
    has to offer; integers come from the largest-remainder method (ties go to
    the generator whose name sorts first).

    Parameters
    ----------
    hit_counts : mapping of str to (int, int)
        ``{generator: (hits, evaluated)}`` summed over earlier rounds; hits =
        oracle-stable candidates.  ``(0, 0)`` for a new generator.
    budget : int
        Oracle evaluations to hand out this round.
    prior : (float, float)
        Beta prior ``(a, b)``, both > 0.
    min_share : float
        Guaranteed fraction of ``budget`` per generator with candidates, in
        [0, 1].  When the guarantees exceed the budget they shrink to
        ``budget // n_generators`` and the rest goes by hit rate.
    available : mapping of str to int or None
        Candidates each generator offers this round (caps its quota; 0 removes
        it; generators missing here count as 0).  ``None``: no caps.
        Generators only in ``available`` are treated as untried.

    Returns
    -------
    dict of str to int
        Quota per generator (every generator named, 0 for those without
        candidates); the quotas sum to ``min(budget, total available)``.
    """
    a, b = (float(x) for x in prior)
    if a <= 0 or b <= 0:
        raise ValueError(f"prior parameters must be > 0, got {prior}")
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be in [0, 1], got {min_share}")
    names = sorted(set(hit_counts) | set(available or {}))
    split = dict.fromkeys(names, 0)
    counts = {name: hit_counts.get(name, (0, 0)) for name in names}
    for name, (hits, evaluated) in counts.items():
        if not 0 <= hits <= evaluated:
            raise ValueError(
                f"{name}: need 0 <= hits <= evaluated, got {hits}/{evaluated}"
            )
    cap = {
        name: (budget if available is None else max(0, int(available.get(name, 0))))
        for name in names
    }
    active = [name for name in names if cap[name] > 0]
    total = min(budget, sum(cap[name] for name in active))
    if not active or total == 0:
        return split

    rates = np.array([(counts[n][0] + a) / (counts[n][1] + a + b) for n in active])
    hi = np.array([min(cap[n], total) for n in active], dtype=float)
    floor = min(math.ceil(min_share * budget), total // len(active))
    lo = np.minimum(float(floor), hi)
    quotas = _solve_quotas(rates, lo, hi, float(total))

    base = np.floor(quotas + 1e-9).astype(int)
    base = np.minimum(base, hi.astype(int))
    left = total - int(base.sum())
    remainder = quotas - base
    # Largest remainder first; names (already sorted) break ties.
    order = sorted(range(len(active)), key=lambda i: (-round(remainder[i], 9), i))
    for i in order:
        if left <= 0:
            break
        if base[i] < hi[i]:
            base[i] += 1
            left -= 1
    for name, quota in zip(active, base, strict=True):
        split[name] = int(quota)
    logger.debug(
        "budget split %s (rates %s)", split, dict(zip(active, rates, strict=True))
    )
    return split
