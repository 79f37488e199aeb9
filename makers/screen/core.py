"""Screens of a campaign's materials: layered by dimensionality, Li-ion conductor
candidates by structural and chemical criteria (docs/screens.md gives sources and
limits).

Pure functions on pymatgen structures; the database side is
:mod:`flywheel.makers.screen.jobs`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure

logger = logging.getLogger(__name__)

#: Transition metals whose common compounds change oxidation state in a cell's
#: voltage window (redox-active): electronically conductive or reduced/oxidised at
#: the electrodes. Closed-shell d0/d10 cations (Sc, Y, Zr, Hf, La, Zn, Cd, Ta, ...)
#: are allowed, as in the known Li conductors LLZO (La, Zr) and LATP-type (Ti is
#: excluded here: Ti4+ is reduced by Li metal).
REDOX_ACTIVE_TM = frozenset(
    "Ti V Cr Mn Fe Co Ni Cu Nb Mo Tc Ru Rh Pd Ag W Re Os Ir Pt Au Ce Pr Sm Eu Yb U "
    "Np Pu".split())

#: Li–Li distance (Å) below which two Li sites count as neighbours on a migration
#: path: about twice the Li+ ionic radius plus a short hop, as in topological
#: screens of Li sublattices.
LI_NEIGHBOUR_CUTOFF = 4.0


def cheon(structure: Structure, tolerance: float = 0.45) -> str | None:
    """Cheon et al. (Nano Lett. 2017) dimensionality as in the GNoME data's
    ``Dimensionality Cheon`` column: ``'3D'``, ``'2D'``, ``'1D'``, ``'0D'``,
    ``'intercalated ion'``, ``'intercalated molecule'`` or None (undetermined)."""
    from pymatgen.analysis.dimensionality import get_dimensionality_cheon

    try:
        return get_dimensionality_cheon(structure, tolerance=tolerance)
    except Exception as err:  # symmetry or cluster search failed on this structure
        logger.warning("Cheon dimensionality failed for %s: %s",
                       structure.composition.reduced_formula, err)
        return None


def larsen(structure: Structure) -> dict[str, Any]:
    """Larsen et al. (Phys. Rev. Mater. 2019) components with CrystalNN bonds:
    the largest dimensionality and the count of components per dimensionality."""
    import warnings

    from pymatgen.analysis.dimensionality import get_structure_components
    from pymatgen.analysis.local_env import CrystalNN

    try:
        with warnings.catch_warnings():  # "no oxidation states": CrystalNN copes
            warnings.simplefilter("ignore", UserWarning)
            bonded = CrystalNN().get_bonded_structure(structure)
        comps = get_structure_components(bonded)
    except Exception as err:
        logger.warning("Larsen dimensionality failed for %s: %s",
                       structure.composition.reduced_formula, err)
        return {"dimensionality": None, "components": {}}
    counts: dict[str, int] = {}
    for c in comps:
        counts[f"{int(c['dimensionality'])}D"] = counts.get(
            f"{int(c['dimensionality'])}D", 0) + 1
    return {"dimensionality": max(int(c["dimensionality"]) for c in comps),
            "components": counts}


def layered(structure: Structure) -> dict[str, Any]:
    """The layered screen: ``layered`` is Cheon's ``'2D'`` (the GNoME criterion);
    Larsen's verdict is stored beside it (``layered_larsen``: the largest component
    is 2D) so that disagreements can be inspected."""
    c = cheon(structure)
    lar = larsen(structure)
    return {
        "dimensionality_cheon": c,
        "dimensionality_larsen": lar["dimensionality"],
        "larsen_components": lar["components"],
        "layered": c == "2D",
        "layered_larsen": lar["dimensionality"] == 2,
    }


def li_sublattice_dimensionality(structure: Structure,
                                 cutoff: float = LI_NEIGHBOUR_CUTOFF) -> int:
    """Dimensionality (0-3) of the network of Li sites joined when closer than
    ``cutoff`` Å (Larsen's algorithm on the Li-only sublattice): 0 means isolated Li
    pockets, 3 a percolating Li sublattice."""
    from pymatgen.analysis.dimensionality import get_structure_components
    from pymatgen.analysis.local_env import CutOffDictNN

    li = structure.copy()
    li.remove_oxidation_states()  # CutOffDictNN keys are element symbols
    li.remove_species([el for el in structure.composition.elements
                       if el.symbol != "Li"])
    if len(li) == 0:
        return 0
    nn = CutOffDictNN({("Li", "Li"): cutoff})
    comps = get_structure_components(nn.get_bonded_structure(li))
    return max(int(c["dimensionality"]) for c in comps)


def li_conductor(structure: Structure, *, stable: bool,
                 band_gap: float | None = None, min_band_gap: float = 1.0,
                 min_li_dimensionality: int = 1) -> dict[str, Any]:
    """The Li-ion conductor pre-screen (docs/screens.md): every criterion with its
    value, and ``candidate`` when all that can be evaluated pass.

    Criteria: contains Li; another element (a host framework); on the campaign hull
    (``stable``); no redox-active
    transition metal (:data:`REDOX_ACTIVE_TM`); a Li sublattice connected in at
    least ``min_li_dimensionality`` dimensions; band gap ≥ ``min_band_gap`` eV when
    the oracle gave one (``None``: not evaluated, and said so).
    """
    elements = {el.symbol for el in structure.composition.elements}
    redox = sorted(elements & REDOX_ACTIVE_TM)
    has_li = "Li" in elements
    li_dim = li_sublattice_dimensionality(structure) if has_li else 0
    checks = {
        "contains_li": has_li,
        # an ion conducts through a host: elemental Li is a metal, not an electrolyte
        "has_framework": len(elements) >= 2,
        "stable": bool(stable),
        "no_redox_active_tm": not redox,
        "li_sublattice_connected": li_dim >= min_li_dimensionality,
        "band_gap": None if band_gap is None else band_gap >= min_band_gap,
    }
    failed = [k for k, v in checks.items() if v is False]
    return {
        "candidate": not failed,
        "failed": failed,
        "not_evaluated": [k for k, v in checks.items() if v is None],
        "checks": checks,
        "redox_active_tm": redox,
        "li_sublattice_dimensionality": li_dim,
        "band_gap": band_gap,
    }
