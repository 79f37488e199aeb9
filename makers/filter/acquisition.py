"""Acquisition maths of the ML filter: from ensemble energies to a selection.

Pure functions over numpy arrays, tested on constructed cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """Per-candidate filter scores (all eV/atom except p_stable)."""

    mean: np.ndarray
    std: np.ndarray
    e_above_hull: np.ndarray
    p_stable: np.ndarray
    acquisition: np.ndarray


def score(
    energies: np.ndarray,
    hull_energies: np.ndarray,
    *,
    threshold: float,
    kappa: float,
    min_std: float = 1e-3,
) -> Scores:
    """Score candidates from ensemble predictions.

    Parameters
    ----------
    energies
        Shape (n_models, n_candidates): predicted energy per atom (eV/atom).
    hull_energies
        Shape (n_candidates,): energy of the current hull at each composition (eV/atom).
    threshold
        Energy above hull (eV/atom) at or below which a candidate counts as stable.
    kappa
        Weight of the spread in the lower confidence bound ``E_hull − kappa·σ``.
    min_std
        Floor on σ (eV/atom) so that p_stable stays defined for agreeing members.

    Returns
    -------
    Scores
        ``p_stable = Φ((threshold − E_hull) / σ)`` with σ the ensemble standard
        deviation (ddof=1); ``acquisition = E_hull − kappa·σ`` (lower is better).
    """
    energies = np.atleast_2d(np.asarray(energies, dtype=float))
    mean = energies.mean(axis=0)
    std = energies.std(axis=0, ddof=1) if energies.shape[0] > 1 else np.zeros_like(mean)
    e_hull = mean - np.asarray(hull_energies, dtype=float)
    sigma = np.maximum(std, min_std)
    z = (threshold - e_hull) / sigma
    p = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
    return Scores(mean, std, e_hull, np.asarray(p, dtype=float), e_hull - kappa * std)


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
