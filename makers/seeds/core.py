"""Seed structures: elemental references, decorated prototypes, seed files, checks.

Pure functions over pymatgen objects; the jobflow Makers wrapping them live elsewhere.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import itertools
import json
import logging
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from monty.json import MSONable
from pymatgen.core import Composition, Element, Lattice, Species, Structure

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

__all__ = ["ELEMENT_STRUCTURE_TYPES", "PROTOTYPE_PRIORITY", "Seed", "atomic_volume",
           "builtin_seeds", "check_structure", "elemental_reference", "load_seed_file"]

logger = logging.getLogger(__name__)

_CM3_PER_MOL_TO_A3 = 1.0e24 / 6.02214076e23  # 1 cm^3/mol in Å^3 per atom

# Ground-state-like structure type of the elemental references.  Simple metals use
# their observed 0 K structure (dhcp/Sm-type rare earths approximated as hcp); complex
# ones (Ga, B, S, Mn, ...) use the matching AFLOW prototype.  C is diamond: graphite
# is unbound without a vdW correction.  Unlisted elements are fcc.  Volumes come from
# ``Element.molar_volume`` (solid-state densities, gases too) or _VOLUME_OVERRIDE.
ELEMENT_STRUCTURE_TYPES: dict[str, str] = {
    **dict.fromkeys("Li Na K Rb Cs Fr Ra Ba V Nb Ta Cr Mo W Fe Eu".split(), "bcc"),
    **dict.fromkeys("Ca Sr Al Ni Cu Ag Au Pd Pt Rh Ir Pb Ce Yb Th Ac Ne Ar Kr Xe"
                    .split(), "fcc"),
    **dict.fromkeys("He Be Mg Sc Y Ti Zr Hf Tc Re Ru Os Co Zn Cd Tl La Pr Nd Pm Gd Tb "
                    "Dy Ho Er Tm Lu".split(), "hcp"),
    **dict.fromkeys("C Si Ge Sn".split(), "diamond"),
    # alpha-N2 type (Pa-3, molecules on fcc sites along <111>, experimental bond
    # length): the real solid for N2, a molecular stand-in for H2, O2 and halogens
    # that avoids a vacuum-dominated molecule-in-box cell.
    **dict.fromkeys("H N O F Cl Br I".split(), "diatomic"),
    # AFLOW prototypes, "aflow:<label>:<prototype formula>" keys into the library.
    **{el: f"aflow:{key}" for el, key in (item.split("=") for item in (
        "Ga=A_oC8_64_f:Ga P=A_oC8_64_f:P In=A_tI2_139_a:In Pa=A_tI2_139_a:Pa "
        "Hg=A_hR1_166_a:Hg Po=A_cP1_221_a:Po As=A_hR2_166_c:As Sb=A_hR2_166_c:As "
        "Bi=A_hR2_166_c:As S=A_oF128_70_4h:S Se=A_hP3_152_a:Se Te=A_hP3_152_a:Se "
        "B=A_hR12_166_2h:B Mn=A_cI58_217_ac2g:Mn U=A_oC4_63_c:U Np=A_oP8_62_2c:Np "
        "Pu=A_mP16_11_8e:Pu Sm=A_hR3_166_ac:Sm").split())},
}

# Volume per atom (Å^3) overriding ``Element.molar_volume``: O's 28.8 is ~65 % above
# solid O2 (alpha-O2 in the AFLOW library: 17.4); C and Sn are tabulated for graphite
# and beta-Sn, not diamond and alpha-Sn; Fr has no data (extrapolated from Cs).
_VOLUME_OVERRIDE = {"O": 17.4, "C": 5.67, "Sn": 34.2, "Fr": 125.0}

# Experimental bond lengths (Å) of the diatomic molecules.
_DIATOMIC_BOND = {"H": 0.741, "N": 1.098, "O": 1.208, "F": 1.412, "Cl": 1.988,
                  "Br": 2.281, "I": 2.666}

# Most common binary structure types first (roughly by ICSD frequency), keyed by AFLOW
# label and prototype formula; the other library prototypes follow by site count and
# label.  ``max_seeds`` keeps the start of this order.
PROTOTYPE_PRIORITY: tuple[str, ...] = (
    # the first ten cover the AB, AB2, A2B3 and AB3 stoichiometries
    "AB_cF8_225_a_b:NaCl", "AB2_cF12_225_a_c:CaF2", "A2B_tP6_136_f_a:TiO2",
    "A2B3_hR10_167_c_e:Al2O3", "AB_cP2_221_b_a:CsCl", "AB_cF8_216_c_a:ZnS",
    "AB_hP4_194_c_a:NiAs", "AB2_hP3_164_a_d:CdI2", "AB3_cP4_221_a_c:Cu3Au",
    "A3B_cP4_221_d_a:ReO3", "AB_hP4_186_b_b:ZnS", "A2B_cF24_227_d_a:MgCu2",
    "AB2_hP3_191_a_d:AlB2", "A2B_cP6_224_b_a:Cu2O", "AB_tP2_123_a_d:CuAu",
    "AB3_cF16_225_a_bc:BiF3", "A2B_tI12_141_e_a:TiO2", "AB2_hP6_194_c_f:MoS2",
    "AB_tP4_129_a_c:PbO", "A3B_tI8_139_bd_a:TiAl3", "A3B_hP8_194_h_c:Ni3Sn",
    "AB_mC8_15_c_e:CuO", "AB2_cP12_205_a_c:FeS2", "AB2_oP6_58_a_g:FeS2",
    "A2B3_hR5_166_c_ac:Bi2Te3", "AB_oP8_62_c_c:MnP", "AB_oP8_62_c_c:FeB",
    "AB_oC8_63_c_c:CrB", "AB_hP2_187_d_a:WC",
)


@dataclass
class Seed(MSONable):
    """A seed structure (no oxidation states) and where it came from.

    ``source`` is e.g. ``"element:bcc"`` or ``"prototype:AB_cF8_225_a_b"``; ``label``
    is human-readable, e.g. ``"FeO (NaCl-type, Na→Fe Cl→O, B1, Halite, Rock Salt)"``
    """

    structure: Structure
    source: str
    label: str


# --------------------------------------------------------------------------- checks
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


# ------------------------------------------------------------------- seed files
def _structures_from_object(obj: Any) -> list[Structure]:
    """Structures in a deserialized JSON object (entry, structure, list, dict)."""
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    if isinstance(obj, (Structure, ComputedStructureEntry)):
        return [obj if isinstance(obj, Structure) else obj.structure]
    if isinstance(obj, (list, tuple)):
        return [s for item in obj for s in _structures_from_object(item)]
    if isinstance(obj, dict):
        # Plain dicts: a serialized object whose class monty could not import, or a
        # {"structure": ...} record as written by many databases.
        if "structure" in obj:
            return _structures_from_object(obj["structure"])
        if "lattice" in obj and "sites" in obj:
            return [Structure.from_dict(obj)]
    raise TypeError(f"unsupported JSON content of type {type(obj).__name__}")


def load_seed_file(path: Path | str) -> list[Structure]:
    """Read all structures from a seed file.

    Supported formats: CIF (``*.cif``, every data block), VASP (``POSCAR*``,
    ``CONTCAR*``, ``*.vasp``, ``*.poscar``), extended XYZ (``*.extxyz``, ``*.xyz``; all
    frames, via ASE) and JSON (``*.json``, ``*.json.gz``) holding a
    ``ComputedStructureEntry``, a ``Structure`` or a list of them (read with
    ``monty.serialization.loadfn``).  Any other name is tried with
    ``Structure.from_file``.

    Returns the structures in file order.  Raises ``FileNotFoundError`` (naming the
    path) if the file does not exist and ``ValueError`` (naming the file and the
    reason) if it cannot be parsed or holds no structures.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"seed file not found: {path}")
    from ase.io import read
    from monty.serialization import loadfn
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifParser
    from pymatgen.io.vasp import Poscar

    name = path.name.lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # parsers warn freely; failures raise below
            if name.endswith(".cif"):
                structures = CifParser(path).parse_structures(primitive=False)
            elif name.endswith((".json", ".json.gz")):
                structures = _structures_from_object(loadfn(path))
            elif name.endswith((".extxyz", ".xyz")):
                structures = [AseAtomsAdaptor.get_structure(a)
                              for a in read(path, index=":")]
            elif name.startswith(("poscar", "contcar")) or name.endswith(
                    (".vasp", ".poscar")):
                structures = [Poscar.from_file(path, check_for_potcar=False).structure]
            else:
                structures = [Structure.from_file(path)]
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"could not read seed file {path}: {reason}") from exc
    if not structures:
        raise ValueError(f"could not read seed file {path}: no structures found")
    return list(structures)


# ------------------------------------------------------------ elemental references
@functools.lru_cache(maxsize=1)
def _prototype_library() -> dict[str, tuple[Structure, dict[str, str]]]:
    """AFLOW prototypes shipped with pymatgen, keyed ``"<aflow label>:<formula>"``.

    Reads ``aflow_prototypes.json.gz`` (the library behind ``AflowPrototypeMatcher``)
    as plain JSON and builds only the structures: decoding the full StructureNL
    objects with ``loadfn`` takes ~3 s, this takes ~0.1 s.
    """
    spec = importlib.util.find_spec("pymatgen.analysis.prototypes")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pymatgen's AFLOW prototype library is missing")
    path = Path(spec.submodule_search_locations[0]) / "aflow_prototypes.json.gz"
    with gzip.open(path, "rt") as handle:
        raw = json.load(handle)
    library: dict[str, tuple[Structure, dict[str, str]]] = {}
    for entry in raw:
        snl = entry["snl"]
        structure = Structure.from_dict({k: snl[k] for k in ("lattice", "sites")})
        key = f"{entry['tags']['aflow']}:{structure.composition.reduced_formula}"
        library.setdefault(key, (structure, dict(entry["tags"])))
    return library


def atomic_volume(element: Element) -> float:
    """Solid-state volume per atom in Å³ (molar volume, else from atomic radius)."""
    if element.symbol in _VOLUME_OVERRIDE:
        return _VOLUME_OVERRIDE[element.symbol]
    if element.molar_volume is not None:
        return float(element.molar_volume) * _CM3_PER_MOL_TO_A3
    radius = float(element.atomic_radius or element.atomic_radius_calculated or 1.5)
    return 4.0 / 3.0 * math.pi * radius**3 / 0.74  # close packing


def elemental_reference(symbol: str) -> Seed:
    """Ground-state-like structure of one element at its solid-state volume per atom.

    The structure type comes from :data:`ELEMENT_STRUCTURE_TYPES` (fcc if absent); the
    seed's source is ``"element:<type>"`` with type bcc/fcc/hcp/diamond/diatomic or the
    AFLOW label used.
    """
    element = Element(symbol)
    vpa = atomic_volume(element)
    kind = ELEMENT_STRUCTURE_TYPES.get(symbol, "fcc")
    if kind == "bcc":
        a = (2 * vpa) ** (1 / 3)
        lattice = Lattice(a / 2 * (1 - 2 * np.eye(3)))  # rows (-1,1,1), (1,-1,1), ...
        structure = Structure(lattice, [symbol], [[0, 0, 0]])
    elif kind in ("fcc", "diamond"):
        a = ((8 if kind == "diamond" else 4) * vpa) ** (1 / 3)
        lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
        coords = [[0, 0, 0], [0.25, 0.25, 0.25]] if kind == "diamond" else [[0, 0, 0]]
        structure = Structure(lattice, [symbol] * len(coords), coords)
    elif kind == "hcp":
        c_over_a = math.sqrt(8 / 3)  # ideal packing
        a = (2 * vpa / (math.sqrt(3) / 2 * c_over_a)) ** (1 / 3)
        structure = Structure(Lattice.hexagonal(a, c_over_a * a), [symbol] * 2,
                              [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    elif kind == "diatomic":
        a = (8 * vpa) ** (1 / 3)
        x = _DIATOMIC_BOND[symbol] / (2 * math.sqrt(3) * a)
        structure = Structure.from_spacegroup("Pa-3", Lattice.cubic(a), [symbol],
                                              [[x, x, x]])
    else:
        proto, _ = _prototype_library()[kind.removeprefix("aflow:")]
        structure = proto.copy()
        structure.replace_species({structure.composition.elements[0]: element})
        structure.scale_lattice(vpa * len(structure))
        kind = kind.split(":")[1]
    return Seed(structure, source=f"element:{kind}", label=f"{symbol} ({kind})")


# ----------------------------------------------------------- prototype decoration
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


def _by_x(structure: Structure) -> list[Element]:
    return sorted(structure.composition.elements, key=lambda e: (e.X, e.symbol))


def _decorate(prototype: Structure, elements: Sequence[str]) -> Structure:
    """Replace the prototype's elements (by electronegativity) by ``elements``."""
    mapping = {p: Element(e) for p, e in zip(_by_x(prototype), elements, strict=True)}
    return Structure(prototype.lattice, [mapping[site.specie] for site in prototype],
                     prototype.frac_coords)


def _estimate_volume(structure: Structure) -> Structure | None:
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


def _prototype_order(max_elements: int, max_sites: int) -> list[str]:
    """Keys of prototypes with 2..max_elements elements and <= max_sites sites."""
    library = _prototype_library()
    keys = [k for k, (s, _) in library.items()
            if 2 <= len(s.composition.elements) <= max_elements and len(s) <= max_sites]
    rank = {k: i for i, k in enumerate(PROTOTYPE_PRIORITY)}
    return sorted(keys, key=lambda k: (rank.get(k, len(rank)), len(library[k][0]), k))


def _system_seeds(
    system: tuple[str, ...], keys: list[str], rejected: Counter[str]
) -> Iterator[Seed]:
    """Yield the accepted decorations of one chemical system in priority order."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    library = _prototype_library()
    matcher = StructureMatcher()
    accepted: dict[str, list[Structure]] = {}
    for key in keys:
        prototype, tags = library[key]
        for combo in itertools.permutations(system):
            structure = _estimate_volume(_decorate(prototype, combo))
            if structure is None:
                rejected["not charge balanced"] += 1
                continue
            if (reason := check_structure(structure)) is not None:
                logger.debug("rejected %s on %s: %s", combo, key, reason)
                rejected["failed check_structure"] += 1
                continue
            formula = structure.composition.reduced_formula
            if any(matcher.fit(structure, seen) for seen in accepted.get(formula, [])):
                rejected["duplicate"] += 1
                continue
            accepted.setdefault(formula, []).append(structure)
            source = f"prototype:{tags['aflow']}"
            if sum(k.startswith(tags["aflow"] + ":") for k in library) > 1:
                source += f"({key.split(':')[1]})"  # the AFLOW label alone is ambiguous
            mapping = " ".join(f"{p.symbol}→{e}"
                               for p, e in zip(_by_x(prototype), combo, strict=True))
            names = "".join(f", {tags[t]}" for t in ("strukturbericht", "mineral")
                            if tags.get(t) not in (None, "", "None"))
            label = f"{formula} ({key.split(':')[1]}-type, {mapping}{names})"
            yield Seed(structure, source, label)


def builtin_seeds(
    elements: Iterable[str],
    max_elements: int = 2,
    max_sites: int = 12,
    max_seeds: int | None = 30,
) -> list[Seed]:
    """Elemental references plus decorated AFLOW prototypes for a set of elements.

    Each prototype with 2..``max_elements`` elements and at most ``max_sites`` sites
    is decorated with every ordered tuple of distinct ``elements`` (the prototype's
    elements are matched in electronegativity order, so both orders of a pair are
    tried, e.g. fluorite CaF2 -> LiO2 and antifluorite Li2O).  A decoration is kept
    if its composition has a charge-balanced oxidation-state guess
    (``Composition.oxi_state_guesses``) or consists of metals only; it is rescaled
    (see ``_estimate_volume``), must pass :func:`check_structure` and must not match
    (``StructureMatcher``) an already accepted decoration of the same formula.

    Cap rule: elemental references are always included and count towards
    ``max_seeds``.  The rest is filled round-robin over the (sorted) chemical systems,
    each contributing its next accepted decoration in :data:`PROTOTYPE_PRIORITY`
    order, so every system gets an equal share of the most common structure types and
    a system with few valid decorations leaves its share to the others.

    Parameters
    ----------
    elements
        Element symbols.
    max_elements
        Most elements in a decorated prototype (1 gives elemental references only).
    max_sites
        Largest prototype (primitive cell) to decorate.
    max_seeds
        Upper bound on the number of seeds (exceeded only if there are more elements
        than that); ``None``: no cap (Li-Fe-O: ~300 seeds in 15 s).

    Returns
    -------
    list of Seed
        Elemental references (sorted by symbol), then decorations in the round-robin
        order above, so ``builtin_seeds(els, max_seeds=k)`` is exactly the first
        ``k`` items of ``builtin_seeds(els, max_seeds=None)``: truncating a longer
        list keeps the same priorities.
    """
    symbols = sorted({Element(e).symbol for e in elements})
    seeds = [elemental_reference(s) for s in symbols]
    budget = None if max_seeds is None else max(max_seeds - len(seeds), 0)

    order = _prototype_order(max_elements, max_sites)
    library = _prototype_library()
    rejected: Counter[str] = Counter()
    generators = [
        _system_seeds(system, [k for k in order if len(library[k][0].composition) == n],
                      rejected)
        for n in range(2, max_elements + 1)
        for system in itertools.combinations(symbols, n)
    ]
    decorated: list[Seed] = []
    while generators and (budget is None or len(decorated) < budget):
        for gen in list(generators):
            if budget is not None and len(decorated) >= budget:
                break
            item = next(gen, None)
            if item is None:
                generators.remove(gen)
            else:
                decorated.append(item)
    logger.info("built %d elemental and %d prototype seeds for %s (skipped: %s)",
                len(seeds), len(decorated), "-".join(symbols), dict(rejected))
    return seeds + decorated
