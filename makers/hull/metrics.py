"""Round metrics from the round's oracle results (pure functions).

One definition of a hit everywhere: an oracle result on the hull of references +
campaign (``stable``: ``e_above_hull`` ≤ ``hull.on_hull_tolerance``) when its round
closes. The audit picks (``selected_by: audit``, drawn uniformly at random from the
scored pool) measure the pool's base rate without bias; the filter's enrichment is its
own picks' hit rate divided by that base rate, with a Katz log interval.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

#: Confidence of the enrichment interval.
ENRICHMENT_CONFIDENCE = 0.9


def enrichment(
    hits: int, n: int, base_hits: int, base_n: int,
    confidence: float = ENRICHMENT_CONFIDENCE,
) -> dict[str, float | None]:
    """Ratio of two hit rates, ``(hits/n) / (base_hits/base_n)``, with an interval.

    The interval is Katz's log interval for a ratio of binomial proportions
    (what ``scipy.stats.contingency.relative_risk`` computes):
    ``exp(ln R ± z·sqrt(1/a − 1/n₁ + 1/c − 1/n₂))``. With a zero count, 0.5 is added
    to every cell of the 2×2 table (Haldane–Anscombe) for the interval only; the
    point value is then 0 (no hits) or undefined (None: no hit among the base picks).

    Parameters
    ----------
    hits, n
        Hits and picks of the arm being measured (the filter's picks).
    base_hits, base_n
        Hits and picks of the baseline (the audit picks).
    confidence
        Two-sided confidence of the interval.

    Returns
    -------
    dict
        ``value``, ``lo``, ``hi`` (None where undefined: an empty arm) and
        ``confidence``.
    """
    out: dict[str, float | None] = {"value": None, "lo": None, "hi": None,
                                    "confidence": confidence}
    if n <= 0 or base_n <= 0:
        return out
    if not (0 <= hits <= n and 0 <= base_hits <= base_n):
        raise ValueError("need 0 <= hits <= n for both arms")
    if base_hits > 0:
        out["value"] = (hits / n) / (base_hits / base_n)
    a, c, n1, n2 = float(hits), float(base_hits), float(n), float(base_n)
    if a == 0 or c == 0:
        a, c, n1, n2 = a + 0.5, c + 0.5, n1 + 1.0, n2 + 1.0
    log_ratio = math.log((a / n1) / (c / n2))
    se = math.sqrt(max(1 / a - 1 / n1 + 1 / c - 1 / n2, 0.0))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    out["lo"], out["hi"] = math.exp(log_ratio - z * se), math.exp(log_ratio + z * se)
    return out


def prediction_quality(materials: list[dict[str, Any]]) -> dict[str, Any]:
    """Hits and the filter's errors on a set of results.

    ``n``, ``hits``, ``hit_rate``; over those with a ``prediction``: ``mae`` of the
    energy per atom (eV/atom) and ``coverage_68``/``coverage_95``, the fractions of
    oracle energies within ±1σ/±2σ (1.96σ) of the ensemble mean (0.68 and 0.95 when
    the spread is calibrated).
    """
    n = len(materials)
    hits = sum(bool(m.get("stable")) for m in materials)
    out: dict[str, Any] = {"n": n, "hits": hits, "hit_rate": hits / n if n else None,
                           "mae": None, "coverage_68": None, "coverage_95": None}
    scored = [m for m in materials if m.get("prediction")]
    if scored:
        err = np.array([m["prediction"]["energy_per_atom"] - m["energy_per_atom"]
                        for m in scored])
        sigma = np.maximum([m["prediction"].get("energy_std", 0.0) for m in scored],
                           1e-12)
        z = np.abs(err) / sigma
        out.update(mae=float(np.mean(np.abs(err))),
                   coverage_68=float(np.mean(z <= 1.0)),
                   coverage_95=float(np.mean(z <= 1.959964)))
    return out


def round_metrics(
    materials: list[dict[str, Any]], threshold: float
) -> dict[str, Any]:
    """Hit rate, audit base rate, enrichment and filter quality of one round.

    Parameters
    ----------
    materials
        Material documents of the round (after the hull update): ``stable``,
        ``energy_per_atom``, ``selected_by`` (``"audit"``, ``"filter"`` or None in
        round 0), ``novelty``, ``discovery`` and, when the filter scored them,
        ``prediction`` with ``energy_per_atom``, ``energy_std`` and ``e_above_hull``.
    threshold
        Predicted energy above hull (eV/atom) at or below which the filter called a
        candidate stable (``filter.stability_threshold``), for precision and recall.

    Returns
    -------
    dict
        ``evaluated``, ``stable_found``, ``hit_rate`` (stable ÷ evaluated, all
        picks); ``n_new`` (discoveries) and ``n_known`` (stable results that match a
        reference); ``filter_mae`` (eV/atom, every scored result); ``precision`` and
        ``recall`` of the stable calls; ``audit`` and ``picks``
        (:func:`prediction_quality` of the audit picks and of the filter's own);
        ``base_rate`` (the audit's hit rate) and ``enrichment`` (picks over audit,
        :func:`enrichment`).
    """
    evaluated = len(materials)
    stable = [bool(m.get("stable")) for m in materials]
    audit = [m for m in materials if m.get("selected_by") == "audit"]
    picks = [m for m in materials if m.get("selected_by") == "filter"]
    a, p = prediction_quality(audit), prediction_quality(picks)
    out: dict[str, Any] = {
        "evaluated": evaluated,
        "stable_found": sum(stable),
        "hit_rate": (sum(stable) / evaluated) if evaluated else None,
        "n_new": sum(bool(m.get("discovery")) for m in materials),
        "n_known": sum(s and m.get("novelty") == "known"
                       for m, s in zip(materials, stable, strict=True)),
        "filter_mae": prediction_quality(materials)["mae"],
        "precision": None,
        "recall": None,
        "audit": a,
        "picks": p,
        "base_rate": a["hit_rate"],
        "enrichment": enrichment(p["hits"], p["n"], a["hits"], a["n"]),
    }
    scored = [(m, s) for m, s in zip(materials, stable, strict=True)
              if m.get("prediction")]
    calls = [m["prediction"]["e_above_hull"] <= threshold for m, _ in scored]
    truth = [s for _, s in scored]
    tp = sum(c and t for c, t in zip(calls, truth, strict=True))
    if sum(calls):
        out["precision"] = tp / sum(calls)
    if sum(truth):
        out["recall"] = tp / sum(truth)
    return out


def cumulative_enrichment(rounds: list[dict[str, Any]]) -> dict[str, float | None]:
    """Enrichment pooled over rounds (their ``picks`` and ``audit`` counts summed):
    one audit pick a round is too few to judge a round alone.
    """
    def total(key: str, field: str) -> int:
        return sum((r.get(key) or {}).get(field) or 0 for r in rounds)

    return enrichment(total("picks", "hits"), total("picks", "n"),
                      total("audit", "hits"), total("audit", "n"))
