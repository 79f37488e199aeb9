"""Structure sanity checks and volume estimates shared by every generator and the seeds.

:func:`check_structure` is the one physical check a structure passes before it is
stored (generators, seeds, seed files); :func:`atomic_volume` and
:func:`estimate_volume` give the starting volumes of built structures.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from pymatgen.core import Composition, Element, Species, Structure

__all__ = ["atomic_volume", "check_structure", "estimate_volume"]

_CM3_PER_MOL_TO_A3 = 1.0e24 / 6.02214076e23  # 1 cm^3/mol in Å^3 per atom

# Volume per atom (Å^3) overriding ``Element.molar_volume``: O's 28.8 is ~65 % above
# solid O2 (alpha-O2 in the AFLOW library: 17.4); C and Sn are tabulated for graphite
# and beta-Sn, not diamond and alpha-Sn; Fr has no data (extrapolated from Cs).
_VOLUME_OVERRIDE = {"O": 17.4, "C": 5.67, "Sn": 34.2, "Fr": 125.0}


@functools.lru_cache(maxsize=1)
def _covalent_radii() -> dict[str, float]:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return dict(CovalentRadius.radius)


def check_structure(
    structure: Structure,
    *,
    min_distance: float = 0.5,
    covalent_factor: float = 0.65,
    volume_per_atom_range: tuple[float, float] = (2.0, 200.0),
    max_sites: int | None = None,
) -> str | None:
    """Return ``None`` if ``structure`` is physically sane, else the rejection reason.

    Checks, in order: non-empty, at most ``max_sites`` sites, fully ordered, only real
    elements, finite coordinates, volume per atom within ``volume_per_atom_range``
    (Å³), no two atoms (including periodic images of the same atom) closer than
    ``min_distance`` Å, and no pair closer than ``covalent_factor`` times the sum of
    their covalent radii (Cordero radii shipped with pymatgen; pairs with an unknown
    radius only get the absolute check).  The relative check catches overlaps the
    absolute floor misses (e.g. two Cs atoms 1.5 Å apart) yet accepts H-H (0.74 Å) or
    C-O (1.13 Å).  0.65 rather than 0.7 keeps alpha-Np and alpha-Pu, whose 2.6 Å
    bonds are 0.69 of their covalent radius sum.

    Parameters
    ----------
    structure
        Structure to check.
    min_distance, covalent_factor, volume_per_atom_range, max_sites
        Thresholds described above; ``max_sites=None`` disables the size check.

    Returns
    -------
    str or None
        ``None`` if sane, else a human-readable reason.
    """
    n = len(structure)
    if n == 0:
        return "structure has no sites"
    if max_sites is not None and n > max_sites:
        return f"more than {max_sites} sites ({n})"
    if not structure.is_ordered:
        return "contains partially occupied (disordered) sites"
    for sp in structure.composition:
        symbol = getattr(sp, "symbol", str(sp))
        if not (isinstance(sp, (Element, Species)) and Element.is_valid_symbol(symbol)):
            return f"contains non-element species {sp}"
    if not (np.isfinite(structure.frac_coords).all() and np.isfinite(structure.volume)):
        return "contains non-finite coordinates or lattice"
    vpa = structure.volume / n
    lo, hi = volume_per_atom_range
    if not lo <= vpa <= hi:
        return f"volume per atom {vpa:.2f} Å³ is unphysical (allowed {lo:g}-{hi:g})"

    radii = _covalent_radii()
    symbols = [site.specie.symbol for site in structure]
    r = np.array([radii.get(s, np.nan) for s in symbols])
    cutoff = max(min_distance, covalent_factor * 2 * np.nanmax(r, initial=0.0)) + 0.01
    centers, neighbors, _, dists = structure.get_neighbor_list(cutoff)
    if len(dists) == 0:
        return None
    rel = np.nan_to_num(covalent_factor * (r[centers] + r[neighbors]), nan=0.0)
    k = int(np.argmin(dists))
    absolute = dists[k] < min_distance
    if not absolute:  # worst pair relative to its covalent limit; 0 = unknown radius
        ratio = np.divide(dists, rel, out=np.full_like(dists, np.inf), where=rel > 0)
        k = int(np.argmin(ratio))
        if ratio[k] >= 1.0:
            return None
    i, j = sorted((int(centers[k]), int(neighbors[k])))
    who = (f"atom {i} ({symbols[i]}) and its periodic image are" if i == j
           else f"atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are")
    limit = (f"{min_distance:g} Å" if absolute else f"{covalent_factor:g} × covalent "
             f"radii sum {r[i] + r[j]:.2f} Å = {rel[k]:.2f} Å")
    return f"{who} {dists[k]:.2f} Å apart (< {limit})"


def atomic_volume(element: Element) -> float:
    """Solid-state volume per atom in Å³ (molar volume, else from atomic radius)."""
    if element.symbol in _VOLUME_OVERRIDE:
        return _VOLUME_OVERRIDE[element.symbol]
    if element.molar_volume is not None:
        return float(element.molar_volume) * _CM3_PER_MOL_TO_A3
    radius = float(element.atomic_radius or element.atomic_radius_calculated or 1.5)
    return 4.0 / 3.0 * math.pi * radius**3 / 0.74  # close packing


@functools.lru_cache(maxsize=4096)
def _oxi_guess(formula: str) -> tuple[tuple[str, float], ...] | None:
    """First charge-balanced oxidation-state guess of a reduced formula (cached)."""
    guesses = Composition(formula).oxi_state_guesses()
    return tuple(sorted(guesses[0].items())) if guesses else None


def _ionic_radius(symbol: str, oxi: float) -> float:
    """Shannon radius of ``symbol`` in state ``oxi``, else a sign-matched average."""
    element, radius = Element(symbol), None
    if float(oxi).is_integer() and oxi:
        radius = Species(symbol, int(oxi)).ionic_radius
    if radius is None:  # mixed valence (e.g. Fe3O4) or no tabulated Shannon radius
        radius = (element.average_cationic_radius if oxi > 0
                  else element.average_anionic_radius)
    return float(radius or element.atomic_radius or _covalent_radii().get(symbol, 1.5))


def _scale_to_contacts(structure: Structure, radii: dict[str, float]) -> Structure:
    """Rescale so that the tightest pair sits exactly at the sum of its radii."""
    rad = np.array([radii[site.specie.symbol] for site in structure])
    r_max = float(rad.max())
    cutoff = 2.5 * r_max
    while True:
        centers, neighbors, _, dists = structure.get_neighbor_list(cutoff)
        ratio = float(np.max((rad[centers] + rad[neighbors]) / dists, initial=0.0))
        if ratio >= 2 * r_max / cutoff:  # no pair beyond the cutoff can beat this ratio
            break
        cutoff *= 1.5
    scaled = structure.copy()
    scaled.scale_lattice(structure.volume * ratio**3)
    return scaled


def estimate_volume(structure: Structure) -> Structure | None:
    """Rescale a decorated prototype; ``None`` if neither charge balanced nor metallic.

    Charge-balanced compositions are scaled so the tightest contact equals the sum of
    Shannon ionic radii of the guessed oxidation states (reproduces NaCl, FeO, CsCl,
    TiO2 within ~3 % in length).  Fully metallic compositions get the sum of the
    elemental solid volumes (Vegard-like, within ~10 % for Cu3Au- and Laves-type
    cells).  Both are starting points for a relaxation, nothing more.
    """
    comp = structure.composition
    guess = _oxi_guess(comp.reduced_formula)
    if guess is not None:
        radii = {el: _ionic_radius(el, oxi) for el, oxi in guess}
        return _scale_to_contacts(structure, radii)
    if all(el.is_metal for el in comp.elements):
        scaled = structure.copy()
        scaled.scale_lattice(sum(atomic_volume(el) * n for el, n in comp.items()))
        return scaled
    return None
