"""Convex-hull bookkeeping with pymatgen's PhaseDiagram, one chemical system at a time.

Only systems touched by a round are rebuilt: a system is touched when an entry whose
chemical system is a subset of it changed, because a new phase in Li-O moves the hull
of Li-Fe-O too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.core import Composition
    from pymatgen.entries.computed_entries import ComputedEntry

    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB

logger = logging.getLogger(__name__)


def hull_entries(
    db: CampaignDB, config: CampaignConfig
) -> list[tuple[str, str, float]]:
    """Every entry of the campaign's hull, ``(id, formula, energy per atom)``: its
    oracle results and, when round 0 did not recompute them (then they share the
    oracle's scale only as its own results), the references with their energies."""
    return db.hull_entries(references=not config.recomputes_references())


def chemsys_of(elements: Iterable[str]) -> str:
    """Canonical chemical-system string: sorted symbols joined by '-'."""
    return "-".join(sorted({str(e) for e in elements}))


@dataclass(frozen=True)
class HullResult:
    """Hull position of one entry."""

    e_above_hull: float
    """Energy above the hull of all entries (eV/atom)."""
    decomposition_energy: float
    """E_hull for unstable entries; the phase-separation energy (≤ 0, hull without the
    entry itself) for stable ones (eV/atom), as GNoME's data set defines it."""
    stable: bool
    """On the hull within the tolerance."""


class HullIndex:
    """Phase diagrams of a set of entries, built lazily per chemical system."""

    def __init__(self, entries: Iterable[ComputedEntry]) -> None:
        self.entries = list(entries)
        self._pds: dict[str, PhaseDiagram | None] = {}

    @cached_property
    def _by_chemsys(self) -> dict[str, list[ComputedEntry]]:
        out: dict[str, list[ComputedEntry]] = {}
        for e in self.entries:
            out.setdefault(chemsys_of(e.elements), []).append(e)
        return out

    def entries_within(self, chemsys: str) -> list[ComputedEntry]:
        """All entries whose elements are a subset of ``chemsys``."""
        allowed = set(chemsys.split("-"))
        return [
            e
            for cs, es in self._by_chemsys.items()
            if set(cs.split("-")) <= allowed
            for e in es
        ]

    def phase_diagram(self, chemsys: str) -> PhaseDiagram | None:
        """The PhaseDiagram of ``chemsys``, or None if an elemental reference is missing."""
        from pymatgen.analysis.phase_diagram import PhaseDiagram

        if chemsys not in self._pds:
            entries = self.entries_within(chemsys)
            present = {
                e.elements[0].symbol for e in entries if len(e.composition.elements) == 1
            }
            missing = set(chemsys.split("-")) - present
            if missing:
                logger.warning(
                    "no elemental reference for %s in %s: hull skipped",
                    ", ".join(sorted(missing)),
                    chemsys,
                )
                self._pds[chemsys] = None
            else:
                self._pds[chemsys] = PhaseDiagram(entries)
        return self._pds[chemsys]

    def hull_energy_per_atom(self, composition: Composition) -> float | None:
        """Energy of the hull at ``composition`` (eV/atom), None if no hull exists."""
        pd = self.phase_diagram(chemsys_of(composition.elements))
        return None if pd is None else float(pd.get_hull_energy_per_atom(composition))


def touched_systems(all_chemsys: Iterable[str], changed: Iterable[str]) -> set[str]:
    """Systems whose hull may move: supersets (or equal) of a changed system."""
    changed_sets = [set(c.split("-")) for c in changed]
    return {
        cs
        for cs in set(all_chemsys)
        if any(ch <= set(cs.split("-")) for ch in changed_sets)
    }


def update_hull(
    entries: Iterable[ComputedEntry],
    changed_chemsys: Iterable[str] | None = None,
    *,
    tolerance: float = 5e-5,
) -> dict[str, HullResult]:
    """Hull results for every entry in the systems touched by ``changed_chemsys``.

    Parameters
    ----------
    entries
        All entries of the campaign; ``entry_id`` identifies each one.
    changed_chemsys
        Chemical systems that gained entries; ``None`` recomputes everything.
    tolerance
        Energy above hull (eV/atom) at or below which an entry counts as stable.

    Returns
    -------
    dict
        ``entry_id`` → :class:`HullResult` for entries of the touched systems that have
        a complete hull (all elemental references present).
    """
    index = HullIndex(entries)
    systems = set(index._by_chemsys)
    if changed_chemsys is not None:
        systems = touched_systems(systems, changed_chemsys)
    results: dict[str, HullResult] = {}
    for cs in sorted(systems):
        pd = index.phase_diagram(cs)
        if pd is None:
            continue
        for entry in index._by_chemsys[cs]:
            e_hull = float(pd.get_e_above_hull(entry, allow_negative=True))
            stable = e_hull <= tolerance
            if stable:
                # tols: the default (1e-8) stops ~1e-5 eV/atom short (Li2FeO3).
                decomp = float(pd.get_phase_separation_energy(entry, tols=(1e-12,)))
            else:
                decomp = e_hull
            results[entry.entry_id] = HullResult(max(e_hull, 0.0), decomp, stable)
    return results
