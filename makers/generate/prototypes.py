"""Prototype enumeration: decorate pymatgen's AFLOW prototypes with allowed elements.

The library (288 prototypes: 176 binary, 48 ternary, 8 quaternary, ...) and the
decoration helpers live here (``seeds.core.builtin_seeds`` uses them for a few binary
seeds per system); :func:`prototype_candidates` enumerates every decoration up to
``max_elements`` elements.

Rule, per prototype with k elements and at most ``max_sites`` sites (order:
:data:`PROTOTYPE_PRIORITY`, then size and label):

1. for every k-subset of the allowed elements and every assignment of it to the
   prototype's elements (k! of them; the prototype's elements are taken in
   electronegativity order, so e.g. fluorite CaF2 yields both LiO2-type and the
   antifluorite Li2O),
2. keep the composition if it passes
   :func:`~flywheel.makers.generate.compositions.is_admissible` with ``rule``
   (default ``"common"``: charge balanced with common oxidation states and the
   anions the most electronegative elements, or only metals/metalloids),
3. rescale: charge-balanced ones so the tightest contact equals the sum of Shannon
   radii, metallic ones (and any other the composition rule admits) to the sum of
   elemental solid volumes (:func:`~flywheel.makers.generate.structures.estimate_volume`,
   :func:`~flywheel.makers.generate.structures.atomic_volume`),
4. keep it if it passes :func:`~flywheel.makers.generate.structures.check_structure` and is
   not isometric to an earlier decoration of the same prototype (assignments that a
   symmetry of the prototype swaps, e.g. both CsCl orders).

Isometric decorations of *different* prototypes are left to the dedup stage.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import itertools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Composition, Element, Structure

from flywheel.makers.generate.core import Candidate
from flywheel.makers.generate.structures import (
    atomic_volume,
    check_structure,
    estimate_volume,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["PROTOTYPE_PRIORITY", "by_x", "decorate", "prototype_candidates",
           "prototype_library", "prototype_order", "prototype_source"]

logger = logging.getLogger(__name__)

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


@functools.lru_cache(maxsize=1)
def prototype_library() -> dict[str, tuple[Structure, dict[str, str]]]:
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


def by_x(structure: Structure) -> list[Element]:
    return sorted(structure.composition.elements, key=lambda e: (e.X, e.symbol))


def decorate(prototype: Structure, elements: Sequence[str]) -> Structure:
    """Replace the prototype's elements (by electronegativity) by ``elements``."""
    mapping = {p: Element(e) for p, e in zip(by_x(prototype), elements, strict=True)}
    return Structure(prototype.lattice, [mapping[site.specie] for site in prototype],
                     prototype.frac_coords)


def prototype_order(max_elements: int, max_sites: int) -> list[str]:
    """Keys of prototypes with 2..max_elements elements and <= max_sites sites."""
    library = prototype_library()
    keys = [k for k, (s, _) in library.items()
            if 2 <= len(s.composition.elements) <= max_elements and len(s) <= max_sites]
    rank = {k: i for i, k in enumerate(PROTOTYPE_PRIORITY)}
    return sorted(keys, key=lambda k: (rank.get(k, len(rank)), len(library[k][0]), k))




def _scaled(structure: Structure) -> Structure:
    """Volume estimate: ionic contacts if charge balanced, else elemental volumes."""
    scaled = estimate_volume(structure)
    if scaled is None:  # admitted by a relaxed rule (e.g. a Zintl phase)
        scaled = structure.copy()
        scaled.scale_lattice(sum(atomic_volume(el) * n
                                 for el, n in structure.composition.items()))
    return scaled


def prototype_source(key: str, tags: dict[str, str], library: dict) -> str:
    """``prototype:<AFLOW label>``, with the prototype formula where the label alone is
    ambiguous."""
    source = f"prototype:{tags['aflow']}"
    if sum(k.startswith(tags["aflow"] + ":") for k in library) > 1:
        source += f"({key.split(':')[1]})"  # the AFLOW label alone is ambiguous
    return source


def prototype_candidates(
    allowed_elements: Iterable[str],
    *,
    max_elements: int = 3,
    max_sites: int = 20,
    max_candidates: int | None = None,
    seed: int = 0,
    rule: str = "common",
    min_elements: int = 2,
) -> list[Candidate]:
    """Decorate the AFLOW prototypes with the allowed elements (module rule).

    Parameters
    ----------
    allowed_elements
        Elements to decorate with.
    max_elements
        Largest number of elements of a prototype (2 to 5).
    max_sites
        Largest prototype, in sites of the stored cell.
    max_candidates
        If the screened decorations (after step 2) are more, build them in an order
        shuffled with ``seed`` and stop after this many accepted ones (a uniform
        sample); the result keeps the enumeration order.  ``None``: all.
    seed
        Seed of that shuffle.
    rule
        Composition rule of step 2 (``"strict"``, ``"common"``, ``"relaxed"``).
    min_elements
        Smallest number of elements of a prototype (e.g. ``min_elements =
        max_elements = 3``: ternary prototypes only).

    Returns
    -------
    list of Candidate
        ``generator="prototype"``, ``source="prototype:<AFLOW label>"``,
        ``substitution`` = {prototype element: new element}; no parent.
    """
    from flywheel.makers.generate.compositions import is_admissible
    from flywheel.makers.generate.core import default_matcher
    from flywheel.makers.generate.dedup import isometry_key

    symbols = sorted({Element(e).symbol for e in allowed_elements})
    library = prototype_library()
    admitted: dict[str, bool] = {}
    plan: list[tuple[str, tuple[str, ...]]] = []
    for key in prototype_order(max_elements, max_sites):
        prototype = library[key][0]
        order = by_x(prototype)
        if len(order) < min_elements:
            continue
        for system in itertools.combinations(symbols, len(order)):
            for combo in itertools.permutations(system):
                formula = Composition({new: prototype.composition[old] for old, new
                                       in zip(order, combo, strict=True)}
                                      ).reduced_formula
                if formula not in admitted:
                    admitted[formula] = is_admissible(formula, rule)
                if admitted[formula]:
                    plan.append((key, combo))
    build_order = list(range(len(plan)))
    if max_candidates is not None and len(plan) > max_candidates:
        build_order = np.random.default_rng(seed).permutation(len(plan)).tolist()

    matcher = default_matcher()
    accepted: dict[int, Candidate] = {}
    seen: dict[tuple[str, bytes], list[Structure]] = {}
    rejected: Counter[str] = Counter()
    for i in build_order:
        if max_candidates is not None and len(accepted) >= max_candidates:
            break
        key, combo = plan[i]
        prototype, tags = library[key]
        structure = _scaled(decorate(prototype, combo))
        if (reason := check_structure(structure)) is not None:
            logger.debug("rejected %s on %s: %s", combo, key, reason)
            rejected["failed check_structure"] += 1
            continue
        ident = (key, isometry_key(structure))
        if any(matcher.fit(structure, other) for other in seen.get(ident, ())):
            rejected["same decoration"] += 1
            continue
        seen.setdefault(ident, []).append(structure)
        mapping = {old.symbol: new for old, new
                   in zip(by_x(prototype), combo, strict=True)}
        accepted[i] = Candidate(structure=structure, generator="prototype",
                                substitution=mapping,
                                source=prototype_source(key, tags, library))
    logger.info("prototypes: %d candidates from %d screened decorations over %s "
                "(rejected: %s)", len(accepted), len(plan), "-".join(symbols),
                dict(rejected))
    return [accepted[i] for i in sorted(accepted)]
