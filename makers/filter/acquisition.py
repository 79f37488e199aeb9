"""Acquisition maths of the ML filter: from ensemble energies to a selection.

Pure functions over numpy arrays, tested on constructed cases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Per-candidate filter scores (eV/atom)."""

    mean: np.ndarray
    std: np.ndarray
    e_above_hull: np.ndarray
    acquisition: np.ndarray


def score(energies: np.ndarray, hull_energies: np.ndarray, *, kappa: float) -> Scores:
    """Score candidates from ensemble predictions.

    Parameters
    ----------
    energies
        Shape (n_models, n_candidates): predicted energy per atom (eV/atom).
    hull_energies
        Shape (n_candidates,): energy of the current hull at each composition (eV/atom).
    kappa
        Weight of the spread in the lower confidence bound ``E_hull − kappa·σ``.

    Returns
    -------
    Scores
        Ensemble mean and standard deviation σ (ddof=1), predicted energy above
        the hull, and ``acquisition = E_hull − kappa·σ`` (lower is better).
    """
    energies = np.atleast_2d(np.asarray(energies, dtype=float))
    mean = energies.mean(axis=0)
    std = energies.std(axis=0, ddof=1) if energies.shape[0] > 1 else np.zeros_like(mean)
    e_hull = mean - np.asarray(hull_energies, dtype=float)
    return Scores(mean, std, e_hull, e_hull - kappa * std)


def select(
    ids: Sequence[str],
    formulas: Sequence[str],
    acquisition: np.ndarray,
    *,
    budget: int,
    max_per_formula: int,
) -> list[str]:
    """Pick up to ``budget`` ids by ascending acquisition, at most ``max_per_formula``
    polymorphs of one reduced formula (diversity); ties broken by id.
    """
    order = sorted(range(len(ids)), key=lambda i: (float(acquisition[i]), ids[i]))
    taken: dict[str, int] = {}
    chosen = []
    for i in order:
        if len(chosen) >= budget:
            break
        if taken.get(formulas[i], 0) >= max_per_formula:
            continue
        taken[formulas[i]] = taken.get(formulas[i], 0) + 1
        chosen.append(ids[i])
    return chosen


def plan_selection(
    ids: Sequence[str],
    formulas: Sequence[str],
    generators: Sequence[str],
    acquisition: np.ndarray,
    *,
    budget: int,
    n_audit: int,
    quotas: Callable[[list[str], int], dict[str | None, int]],
    max_per_formula: int,
    strategy: str = "acquisition",
    seed: Sequence[int] | int = 0,
) -> tuple[list[str], list[str]]:
    """Split a round's oracle budget into audit picks and the strategy's picks.

    First ``n_audit`` candidates are drawn uniformly at random, without replacement,
    from the whole pool (the audit: an unbiased sample of what the generators
    produced). The rest of the budget is then chosen from the remaining pool:

    * ``"acquisition"``: per generator quota (``quotas(generators, k)``), ascending
      acquisition with at most ``max_per_formula`` polymorphs per formula
      (:func:`select`);
    * ``"random_per_generator"``: the same quotas and polymorph cap, in a random
      order instead of the acquisition's (what the budget split alone gives);
    * ``"random"``: uniformly at random (no quotas, no cap).

    Parameters
    ----------
    ids, formulas, generators
        Per pool member: candidate id, reduced formula, generator.
    acquisition
        Shape (n,): acquisition values (lower is better).
    budget
        Oracle calls this round, audit included.
    n_audit
        Audit picks (at most the pool size and the budget).
    quotas
        ``quotas(generators_of_remaining_pool, k)`` → generator (or None for all)
        → picks.
    max_per_formula
        Polymorph cap of the non-random strategies.
    strategy
        See above.
    seed
        Seed of the random draws (e.g. ``[campaign seed, round]``): a rerun draws
        the same.

    Returns
    -------
    (list of str, list of str)
        Every selected id (strategy picks, then audit picks), and the audit ids.
    """
    if strategy not in ("acquisition", "random", "random_per_generator"):
        raise ValueError(f"unknown selection strategy {strategy!r}")
    rng = np.random.default_rng(seed)
    n = len(ids)
    n_audit = max(0, min(n_audit, n, budget))
    audit = sorted(int(i) for i in rng.choice(n, size=n_audit, replace=False))
    taken = set(audit)
    rest = [i for i in range(n) if i not in taken]
    k = budget - n_audit
    if strategy == "random":
        picks = rng.choice(len(rest), size=min(k, len(rest)), replace=False)
        chosen = [ids[rest[int(j)]] for j in sorted(picks)]
    else:
        keys = (np.asarray(acquisition, dtype=float) if strategy == "acquisition"
                else rng.permutation(n).astype(float))
        chosen = []
        plan = quotas([generators[i] for i in rest], k) if k > 0 else {}
        for gen, quota in sorted(plan.items(), key=lambda kv: str(kv[0])):
            idx = [i for i in rest if gen is None or generators[i] == gen]
            chosen += select([ids[i] for i in idx], [formulas[i] for i in idx],
                             keys[idx], budget=quota, max_per_formula=max_per_formula)
    audit_ids = [ids[i] for i in audit]
    return chosen + audit_ids, audit_ids
