"""Prototype enumeration: decorate pymatgen's AFLOW prototypes with allowed elements.

The library (288 prototypes: 176 binary, 48 ternary, 8 quaternary, ...) and the
decoration helpers are those of :mod:`flywheel.makers.seeds.core`
(``builtin_seeds`` uses them for a few binary seeds per system); this module
enumerates every decoration up to ``max_elements`` elements.

Rule, per prototype with k elements and at most ``max_sites`` sites (order:
:data:`~flywheel.makers.seeds.core.PROTOTYPE_PRIORITY`, then size and label):

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
   elemental solid volumes (``seeds.core._estimate_volume``,
   :func:`~flywheel.makers.seeds.core.atomic_volume`),
4. keep it if it passes :func:`~flywheel.makers.seeds.core.check_structure` and is
   not isometric to an earlier decoration of the same prototype (assignments that a
   symmetry of the prototype swaps, e.g. both CsCl orders).

Isometric decorations of *different* prototypes are left to the dedup stage.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from flywheel.makers.generate.core import Candidate
from pymatgen.core import Composition, Element

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pymatgen.core import Structure

__all__ = ["prototype_candidates"]

logger = logging.getLogger(__name__)


def _scaled(structure: Structure) -> Structure:
    """Volume estimate: ionic contacts if charge balanced, else elemental volumes."""
    from flywheel.makers.seeds.core import _estimate_volume, atomic_volume

    scaled = _estimate_volume(structure)
    if scaled is None:  # admitted by a relaxed rule (e.g. a Zintl phase)
        scaled = structure.copy()
        scaled.scale_lattice(sum(atomic_volume(el) * n
                                 for el, n in structure.composition.items()))
    return scaled


def _source(key: str, tags: dict[str, str], library: dict) -> str:
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
    from flywheel.makers.seeds.core import (
        _by_x,
        _decorate,
        _prototype_library,
        _prototype_order,
        check_structure,
    )

    symbols = sorted({Element(e).symbol for e in allowed_elements})
    library = _prototype_library()
    admitted: dict[str, bool] = {}
    plan: list[tuple[str, tuple[str, ...]]] = []
    for key in _prototype_order(max_elements, max_sites):
        prototype = library[key][0]
        order = _by_x(prototype)
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
        structure = _scaled(_decorate(prototype, combo))
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
                   in zip(_by_x(prototype), combo, strict=True)}
        accepted[i] = Candidate(structure=structure, generator="prototype",
                                substitution=mapping,
                                source=_source(key, tags, library))
    logger.info("prototypes: %d candidates from %d screened decorations over %s "
                "(rejected: %s)", len(accepted), len(plan), "-".join(symbols),
                dict(rejected))
    return [accepted[i] for i in sorted(accepted)]
