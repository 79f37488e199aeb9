"""Seed structures: elemental references, decorated prototypes, seed files.

The prototype library and decoration helpers are
:mod:`flywheel.makers.generate.prototypes`; the structure checks and volume estimates
:mod:`flywheel.makers.generate.structures` (seeds depend on generation, never back).

Pure functions over pymatgen objects; the jobflow Makers wrapping them live elsewhere.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from monty.json import MSONable
from pymatgen.core import Element, Lattice, Structure

from flywheel.makers.generate.prototypes import (
    by_x,
    decorate,
    prototype_library,
    prototype_order,
    prototype_source,
)
from flywheel.makers.generate.structures import (
    atomic_volume,
    check_structure,
    estimate_volume,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["ELEMENT_STRUCTURE_TYPES", "Seed", "builtin_seeds", "elemental_reference",
           "load_seed_file"]

logger = logging.getLogger(__name__)


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

# Experimental bond lengths (Å) of the diatomic molecules.
_DIATOMIC_BOND = {"H": 0.741, "N": 1.098, "O": 1.208, "F": 1.412, "Cl": 1.988,
                  "Br": 2.281, "I": 2.666}

@dataclass
class Seed(MSONable):
    """A seed structure (no oxidation states) and where it came from.

    ``source`` is e.g. ``"element:bcc"`` or ``"prototype:AB_cF8_225_a_b"``; ``label``
    is human-readable, e.g. ``"FeO (NaCl-type, Na→Fe Cl→O, B1, Halite, Rock Salt)"``
    """

    structure: Structure
    source: str
    label: str


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
        proto, _ = prototype_library()[kind.removeprefix("aflow:")]
        structure = proto.copy()
        structure.replace_species({structure.composition.elements[0]: element})
        structure.scale_lattice(vpa * len(structure))
        kind = kind.split(":")[1]
    return Seed(structure, source=f"element:{kind}", label=f"{symbol} ({kind})")


# ----------------------------------------------------------- prototype decoration
def _system_seeds(
    system: tuple[str, ...], keys: list[str], rejected: Counter[str]
) -> Iterator[Seed]:
    """Yield the accepted decorations of one chemical system in priority order."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    library = prototype_library()
    matcher = StructureMatcher()
    accepted: dict[str, list[Structure]] = {}
    for key in keys:
        prototype, tags = library[key]
        for combo in itertools.permutations(system):
            structure = estimate_volume(decorate(prototype, combo))
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
            source = prototype_source(key, tags, library)
            mapping = " ".join(f"{p.symbol}→{e}"
                               for p, e in zip(by_x(prototype), combo, strict=True))
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
    (see :func:`~flywheel.makers.generate.structures.estimate_volume`), must pass
    :func:`~flywheel.makers.generate.structures.check_structure` and must not match
    (``StructureMatcher``) an already accepted decoration of the same formula.

    Cap rule: elemental references are always included and count towards
    ``max_seeds``.  The rest is filled round-robin over the (sorted) chemical systems,
    each contributing its next accepted decoration in
    :data:`~flywheel.makers.generate.prototypes.PROTOTYPE_PRIORITY`
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

    order = prototype_order(max_elements, max_sites)
    library = prototype_library()
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
