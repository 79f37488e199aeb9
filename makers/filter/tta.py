"""Volume-based test-time augmentation (TTA) of ensemble energy predictions.

GNoME (Merchant et al., Nature 2023) scores a candidate not only at the volume
it was generated with but at a few isotropically rescaled copies: substitution
and prototype candidates inherit the lattice of their parent, so their volume is
off by a few per cent, and the oracle relaxation will fix exactly that.  The
minimum predicted energy over the rescaled copies is a cheap estimate of the
energy after a volume relaxation (an upper bound on the model's relaxed-volume
energy that becomes tight as the grid gets finer), so taking the minimum
removes most of the volume error from the ranking without running a relaxation.

Choice made here: ``scales`` are **linear** (lattice-parameter) factors by
default, applied isotropically with fractional coordinates fixed, so a scale
``s`` multiplies the volume by ``s**3``; the default ``(0.96, ..., 1.04)``
spans volumes of 0.885-1.125.  ``kind="volume"`` reads the same numbers as
volume factors instead (linear factor ``s**(1/3)``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from flywheel.makers.filter.core import _to_atoms, predict_energies

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_SCALES: tuple[float, ...] = (0.96, 0.98, 1.0, 1.02, 1.04)


def scaled_copies(
    structure: Any, scales: Sequence[float], *, kind: Literal["linear", "volume"]
) -> list[Any]:
    """Isotropically rescaled copies of one structure.

    Parameters
    ----------
    structure : pymatgen Structure or ase.Atoms
        Ordered, periodic structure.
    scales : sequence of float
        Scale factors (> 0), see ``kind``.
    kind : {"linear", "volume"}
        ``"linear"``: lattice vectors are multiplied by ``s`` (volume by
        ``s**3``); ``"volume"``: the volume is multiplied by ``s``.

    Returns
    -------
    list of ase.Atoms
        One copy per scale with the same fractional coordinates.
    """
    if kind not in ("linear", "volume"):
        raise ValueError(f"kind must be 'linear' or 'volume', got {kind!r}")
    atoms = _to_atoms(structure)
    copies = []
    for s in scales:
        if not s > 0:
            raise ValueError(f"scales must be positive, got {s}")
        linear = float(s) if kind == "linear" else float(s) ** (1.0 / 3.0)
        copy = atoms.copy()
        copy.calc = None
        copy.set_cell(atoms.get_cell()[:] * linear, scale_atoms=True)
        copies.append(copy)
    return copies


def predict_with_tta(
    models: Sequence[torch.nn.Module],
    structures: Sequence[Any],
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    kind: Literal["linear", "volume"] = "linear",
    aggregate: Literal["min", "mean", "none"] = "min",
    batch_size: int | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Ensemble energies per atom with volume-scaling test-time augmentation.

    All ``n_scales x n_structures`` copies go through one batched
    :func:`~flywheel.makers.filter.core.predict_energies` call (graphs shared
    by the members); each member then aggregates over its own scalings, so the
    ensemble spread of the result is still a spread between members.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        MACE models (:func:`~flywheel.makers.filter.core.load_models`).
    structures : sequence of pymatgen Structure or ase.Atoms
        Candidates.
    scales : sequence of float
        Scale factors; include ``1.0`` to keep the structure as given.  With
        ``scales=(1.0,)`` the result equals ``predict_energies``.
    kind : {"linear", "volume"}
        How ``scales`` are read (see :func:`scaled_copies`).
    aggregate : {"min", "mean", "none"}
        ``"min"``: the lowest energy over the scalings (relaxed-volume estimate,
        GNoME); ``"mean"``: the average (a smoothing, not a relaxation);
        ``"none"``: keep every scaling.
    batch_size : int or None
        Most structures per batch (see ``predict_energies``; ``None``: by device).
    device : str
        Torch device.

    Returns
    -------
    numpy.ndarray
        eV/atom; shape ``(n_models, n_structures)``, or
        ``(n_models, n_scales, n_structures)`` for ``aggregate="none"``.
    """
    if aggregate not in ("min", "mean", "none"):
        raise ValueError(f"aggregate must be 'min', 'mean' or 'none', got {aggregate}")
    scales = [float(s) for s in scales]
    if not scales:
        raise ValueError("need at least one scale")
    n_s, n_c = len(scales), len(structures)
    # Copies ordered structure-major so a batch holds the scalings of
    # neighbouring structures (same sizes, similar edge counts).
    copies = [c for s in structures for c in scaled_copies(s, scales, kind=kind)]
    logger.debug("TTA: %d structures x %d scales", n_c, n_s)
    flat = predict_energies(models, copies, batch_size=batch_size, device=device)
    energies = flat.reshape(len(models), n_c, n_s).transpose(0, 2, 1)
    if aggregate == "none":
        return energies
    if aggregate == "min":
        return energies.min(axis=1)
    return energies.mean(axis=1)


def best_scale(
    energies: np.ndarray, scales: Sequence[float] = DEFAULT_SCALES
) -> np.ndarray:
    """Scale of the lowest ensemble-mean energy per structure.

    Parameters
    ----------
    energies : numpy.ndarray
        ``(n_models, n_scales, n_structures)`` from
        ``predict_with_tta(..., aggregate="none")``, eV/atom.
    scales : sequence of float
        The scales used.

    Returns
    -------
    numpy.ndarray
        ``(n_structures,)``; a value at either end of ``scales`` means the
        minimum lies outside the grid (the structure wants a larger change).
    """
    energies = np.asarray(energies, dtype=float)
    if energies.ndim != 3 or energies.shape[1] != len(scales):
        raise ValueError("energies must be (n_models, n_scales, n_structures)")
    return np.asarray(scales, dtype=float)[energies.mean(axis=0).argmin(axis=0)]
