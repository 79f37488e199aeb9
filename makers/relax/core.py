"""What every oracle backend returns and shares: the result of one relaxation, the
sink that hands results on as they arrive, the frame subsampling rule, and how a
selection splits into chunks (one FireWorks job each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from ase import Atoms
    from pymatgen.core import Structure


@dataclass
class OracleResult:
    """The outcome of relaxing one structure."""

    structure: Structure | None
    """Relaxed structure (None on failure)."""
    energy: float | None = None
    """Total energy of the relaxed cell (eV)."""
    converged: bool = False
    """Whether the force criterion was met within the step budget."""
    n_steps: int = 0
    """Ionic steps taken."""
    frames: list[Atoms] = field(default_factory=list)
    """Training frames with REF_energy (eV), REF_forces (eV/Å) and REF_stress
    (eV/Å³, ASE sign convention)."""
    error: str | None = None
    """Why the relaxation failed, if it did."""
    seconds: float = 0.0
    """Wall time of this relaxation."""
    details: dict = field(default_factory=dict)
    """Oracle-specific provenance (for VASP: the calculation directory, calc types,
    uncorrected energy, the MP2020 adjustments, custodian's corrections)."""

    @property
    def ok(self) -> bool:
        return self.error is None and self.structure is not None


class ResultSink:
    """Collects a backend's results in order and hands each one to ``on_result`` as
    soon as it exists (the relax job stores it before the next relaxation starts).
    """

    def __init__(self, on_result: Callable[[int, OracleResult], None] | None) -> None:
        self.results: list[OracleResult] = []
        self._on_result = on_result

    def __call__(self, result: OracleResult) -> None:
        if self._on_result is not None:
            self._on_result(len(self.results), result)
        self.results.append(result)


def subsample_indices(n: int, max_frames: int) -> list[int]:
    """Evenly spaced frame indices, always including the first and the last."""
    if n <= max_frames:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, max_frames)})


def chunk_ids(ids: list[str], chunk_index: int, n_chunks: int) -> list[str]:
    """The ids of one chunk: a contiguous slice, chunks differing by at most one."""
    n = len(ids)
    lo = (n * chunk_index) // n_chunks
    hi = (n * (chunk_index + 1)) // n_chunks
    return ids[lo:hi]
