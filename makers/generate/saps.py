"""SAPS: symmetry-aware partial substitution (Merchant et al., Nature 2023).

Ordinary substitution replaces *every* site of an element; SAPS replaces a
symmetry-distinct *part* of them, which reaches new stoichiometries and orderings
(Cu3Au-type NaK3Cl4 from rock salt, SrTiO2F from perovskite).

Enumeration rule (exact)
------------------------
For a parent (as given, not reduced: the cell bounds the orderings) and a pair A -> B
(A in the parent, B allowed, B != A), let G be the symmetry operations of the parent
cell (spglib via ``SpacegroupAnalyzer(parent, symprec)``; only operations that map
this cell onto itself, so a supercell's pure translations count and a 2x2x1 cell of
a cubic crystal has tetragonal G), acting on sites as permutations, and O_1 .. O_r
the orbits of A under G (``get_symmetrized_structure().equivalent_indices``).

1. **Orbit level**: replace A by B on every site of S, for every non-empty *proper*
   subset S of {O_1 .. O_r}: 2^r - 2 children (none if r = 1).  Skipped when
   r > ``max_orbits``.  The full set is left out on purpose: replacing every orbit is
   ordinary substitution, which :func:`~flywheel.makers.generate.core.
   substitution_candidates` does with oxidation states and charge balance.
2. **Site level**: for every orbit O_i with 2 <= |O_i| <= ``max_orbit_sites``, replace
   A by B on a non-empty proper subset T of O_i (every other site keeps its
   species), one T per class of the action of G on subsets (the lexicographically
   smallest bitmask represents each class).
3. **Distinct results**: children of one (parent, pair) that are isometric (same
   :func:`~flywheel.makers.generate.dedup.isometry_key`, confirmed with
   StructureMatcher) are kept once, the first in the order 1 then 2.  This removes
   coincidences that G cannot see (normaliser symmetry, supercell copies).

Counts (tested in ``tests/test_generators.py``):

========================================  ===========  ======  ==================
parent                                    pair         r       children
========================================  ===========  ======  ==================
NaCl rock salt, 2-atom primitive cell     Na -> K      1       0
NaCl rock salt, 8-atom conventional cell  Na -> K      1       3 (1+1+1 for 1,2,3
                                                               of 4 Na; L1_2,
                                                               L1_0, L1_2)
SrTiO3 cubic perovskite, 5 atoms          O -> F       1       2 (1 or 2 of 3 O)
SrTiO3 cubic perovskite, 5 atoms          Ti -> Nb     1       0
SrTiO3 2x2x2 supercell, 40 atoms          Ti -> Nb     1       20 of 254 subsets
                                                               (1+3+3+6+3+3+1)
Fe3O4 spinel, 14-atom primitive cell      Fe -> Co     2       6 (2 orbit level
                                                               + 1 + 3 site level)
Fe3O4 spinel, 14-atom primitive cell      O -> F       1       20 of 254 subsets
========================================  ===========  ======  ==================

Every site-level count equals the number of StructureMatcher classes of all
subsets of that orbit (brute force; in the tests for all rows but the last, which
takes 10 s).  The rule is deliberately not exhaustive across orbits: the spinel cell
has 13 distinct partial Fe -> Co substitutions over all 62 subsets of its 6 Fe sites,
SAPS makes the 6 that replace whole orbits or part of one orbit.  Cost grows as
2^r - 2 (orbit level) plus at most 2^max_orbit_sites - 2 subsets per orbit, each
tested against |G| permutations with numpy.

Pairs: given explicitly, or every (A, B) with element-level substitution probability
P(B replaces A) >= ``threshold`` (:func:`substitution_pairs`).
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Element, Species, Structure

from flywheel.makers.generate.core import Candidate

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["partial_substitutions", "saps_candidates", "substitution_pairs"]

logger = logging.getLogger(__name__)


def substitution_pairs(
    allowed_elements: Iterable[str],
    *,
    threshold: float = 5e-3,
    elements: Iterable[str] | None = None,
) -> list[tuple[str, str, float]]:
    """Element pairs (A, B, p) with p = P(B replaces A) >= ``threshold``.

    p is the conditional probability of the element-level substitution model of
    :mod:`flywheel.makers.generate.core` (Hautier et al. λ table, the largest λ over
    same-sign ions of each element pair), so a cation never turns into an anion.
    Examples: Na -> K 0.059, O -> F 0.068, Ti -> Nb 0.016, Li -> Fe 0.008.

    Parameters
    ----------
    allowed_elements
        Candidates for B.
    threshold
        Minimum conditional probability.
    elements
        Candidates for A (default: ``allowed_elements``).

    Returns
    -------
    list of tuple
        Sorted by decreasing p, then A, then B.
    """
    from flywheel.makers.generate.core import _element_model

    model = _element_model()
    allowed = sorted({Element(e).symbol for e in allowed_elements})
    sources = allowed if elements is None else sorted({Element(e).symbol
                                                       for e in elements})
    pairs = []
    for a in sources:
        for b in allowed:
            if a == b or Species(a, 0) not in model.species \
                    or Species(b, 0) not in model.species:
                continue
            p = float(model.cond_prob(Species(b, 0), Species(a, 0)))
            if p >= threshold:
                pairs.append((a, b, p))
    return sorted(pairs, key=lambda t: (-t[2], t[0], t[1]))


def _site_permutations(structure: Structure, symprec: float) -> tuple[
        np.ndarray, list[list[int]], list[str]]:
    """Symmetry operations of the cell as site permutations, A-orbits, Wyckoff labels.

    Returns
    -------
    tuple
        (array (n_ops, n_sites) with ``perm[g, i]`` the image of site i, orbits as
        lists of site indices, Wyckoff symbol of each orbit).
    """
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sga = SpacegroupAnalyzer(structure, symprec=symprec)
    symmetrized = sga.get_symmetrized_structure()
    frac = structure.frac_coords
    matrix = structure.lattice.matrix
    z = np.array([sp.Z for sp in structure.species])
    other_species = z[:, None] != z[None, :]
    perms = []
    for op in sga.get_symmetry_operations(cartesian=False):
        image = frac @ op.rotation_matrix.T + op.translation_vector
        diff = image[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ matrix, axis=-1)
        dist[other_species] = np.inf
        perm = np.argmin(dist, axis=1)
        # spglib found the operation within symprec; a looser bound only guards
        # against an assignment that is not a permutation.
        if dist[np.arange(len(perm)), perm].max() < 3 * symprec and \
                len(set(perm.tolist())) == len(perm):
            perms.append(perm)
        else:
            logger.debug("dropped a symmetry operation that is no site permutation")
    orbits = [sorted(group) for group in symmetrized.equivalent_indices]
    return np.array(perms), orbits, list(symmetrized.wyckoff_symbols)


def _subset_representatives(orbit: Sequence[int], perms: np.ndarray) -> list[int]:
    """One bitmask per class of proper non-empty subsets of ``orbit`` under ``perms``.

    Bit j stands for site ``orbit[j]``; the smallest mask of each class represents
    it.  Returned by (number of sites, mask).
    """
    m = len(orbit)
    position = {site: j for j, site in enumerate(orbit)}
    local = np.array([[position[int(p[site])] for site in orbit] for p in perms])
    masks = np.arange(1, 2**m - 1, dtype=np.int64)
    canonical = masks.copy()
    for image_of in local:
        image = np.zeros_like(masks)
        for j in range(m):
            image |= ((masks >> j) & 1) << int(image_of[j])
        canonical = np.minimum(canonical, image)
    reps = masks[canonical == masks].tolist()
    return sorted(reps, key=lambda k: (bin(k).count("1"), k))


def _child(parent: Structure, sites: Iterable[int], new: str,
           scale_volume: bool) -> Structure:
    species = [sp.symbol for sp in parent.species]  # drops oxidation states
    for i in sites:
        species[i] = new
    child = Structure(parent.lattice, species, parent.frac_coords)
    if scale_volume:
        from flywheel.makers.generate.structures import atomic_volume

        # Vegard-like, as the element-level substitution model does in core._rescale.
        def _total(symbols: Iterable[str]) -> float:
            return sum(atomic_volume(Element(s)) for s in symbols)

        old = [sp.symbol for sp in parent.species]
        child.scale_lattice(parent.volume * _total(species) / _total(old))
    return child


def partial_substitutions(
    parent: Structure,
    old: str,
    new: str,
    *,
    symprec: float = 0.01,
    max_orbits: int = 8,
    max_orbit_sites: int = 8,
    scale_volume: bool = True,
    _symmetry: tuple | None = None,
) -> list[tuple[Structure, str]]:
    """All SAPS children of one parent for one pair ``old -> new`` (module rule).

    Parameters
    ----------
    parent
        Ordered parent structure, used in the cell given.
    old, new
        Element replaced and element put in.
    symprec
        spglib tolerance (Å) for the symmetry of the parent.
    max_orbits
        Orbit-level subsets only if ``old`` has at most this many orbits
        (2^max_orbits - 2 children at most).
    max_orbit_sites
        Site-level subsets only in orbits with at most this many sites.
    scale_volume
        Rescale each child by the ratio of summed elemental volumes.

    Returns
    -------
    list of tuple
        (child without oxidation states, description such as
        ``"orbits 3c"`` or ``"1/3 sites of orbit 3d"``), in rule order.
    """
    from flywheel.makers.generate.core import default_matcher
    from flywheel.makers.generate.dedup import isometry_key

    perms, orbits, wyckoffs = _symmetry or _site_permutations(parent, symprec)
    mine = [(o, w) for o, w in zip(orbits, wyckoffs, strict=True)
            if parent[o[0]].specie.symbol == old]
    raw: list[tuple[list[int], str]] = []
    r = len(mine)
    if 2 <= r <= max_orbits:
        subsets = [s for k in range(1, r) for s in itertools.combinations(range(r), k)]
        subsets.sort(key=lambda s: (sum(len(mine[i][0]) for i in s), s))
        for s in subsets:
            sites = [i for k in s for i in mine[k][0]]
            raw.append((sites, "orbits " + "+".join(mine[k][1] for k in s)))
    elif r > max_orbits:
        logger.info("%s: %d orbits of %s > max_orbits=%d, orbit level skipped",
                    parent.composition.reduced_formula, r, old, max_orbits)
    for orbit, wyckoff in mine:
        if not 2 <= len(orbit) <= max_orbit_sites:
            continue
        for mask in _subset_representatives(orbit, perms):
            sites = [orbit[j] for j in range(len(orbit)) if mask >> j & 1]
            raw.append((sites, f"{len(sites)}/{len(orbit)} sites of orbit {wyckoff}"))

    matcher = None
    kept: dict[bytes, list[Structure]] = {}
    out: list[tuple[Structure, str]] = []
    for sites, description in raw:
        child = _child(parent, sites, new, scale_volume)
        key = isometry_key(child)
        if key in kept:
            matcher = matcher or default_matcher()
            if any(matcher.fit(child, other) for other in kept[key]):
                continue
        kept.setdefault(key, []).append(child)
        out.append((child, description))
    return out


def saps_candidates(
    parents: Iterable[tuple[str, Structure]],
    pairs: Iterable[tuple[str, str]] | None,
    allowed_elements: Iterable[str],
    *,
    threshold: float = 5e-3,
    max_candidates_per_parent: int | None = None,
    symprec: float = 0.01,
    max_sites: int = 40,
    max_orbits: int = 8,
    max_orbit_sites: int = 8,
    max_elements: int | None = None,
    scale_volume: bool = True,
) -> list[Candidate]:
    """Partial-substitution candidates of every parent (rule in the module docstring).

    Parameters
    ----------
    parents
        ``(parent_id, structure)`` pairs.  Parents with more than ``max_sites`` sites,
        disordered ones and ones with an element outside ``allowed_elements`` (it
        would survive partial substitution) are skipped.
    pairs
        ``(A, B)`` pairs to apply; ``None``: :func:`substitution_pairs` of the
        allowed elements at ``threshold``.  Explicit pairs ignore ``threshold``;
        those whose B is not allowed are dropped.
    allowed_elements
        Elements a candidate may contain.
    threshold
        Minimum P(B replaces A) when ``pairs`` is None.
    max_candidates_per_parent
        Keep the first this many of each parent (pairs by decreasing probability,
        each in rule order).
    symprec
        spglib tolerance (Å) for the parents' symmetry.
    max_sites, max_orbits, max_orbit_sites
        Size limits, see above and :func:`partial_substitutions`.
    max_elements
        Drop children with more elements.
    scale_volume
        Rescale children by summed elemental volumes (Vegard-like).

    Returns
    -------
    list of Candidate
        ``generator="saps"``, ``substitution={A: B}``, ``source="saps:<what>"``,
        ``probability`` = P(B replaces A); parents in input order.
    """
    from flywheel.makers.generate.core import _element_model

    allowed = {Element(e).symbol for e in allowed_elements}
    if pairs is None:
        pair_list = substitution_pairs(allowed, threshold=threshold)
    else:
        model = _element_model()

        def _p(a: str, b: str) -> float:
            sa, sb = Species(a, 0), Species(b, 0)
            if sa in model.species and sb in model.species:
                return float(model.cond_prob(sb, sa))
            return 0.0

        pair_list = sorted(((Element(a).symbol, Element(b).symbol,
                             _p(Element(a).symbol, Element(b).symbol))
                            for a, b in pairs if Element(b).symbol in allowed),
                           key=lambda t: (-t[2], t[0], t[1]))
    out: list[Candidate] = []
    for parent_id, structure in parents:
        elements = {el.symbol for el in structure.composition.elements}
        if len(structure) > max_sites or not structure.is_ordered:
            logger.info("saps: skipping parent %s (%d sites, ordered=%s)", parent_id,
                        len(structure), structure.is_ordered)
            continue
        if not elements <= allowed:
            logger.info("saps: skipping parent %s: %s not allowed", parent_id,
                        sorted(elements - allowed))
            continue
        relevant = [(a, b, p) for a, b, p in pair_list if a in elements]
        if not relevant:
            continue
        symmetry = _site_permutations(structure, symprec)
        found: list[Candidate] = []
        for a, b, p in relevant:
            if max_elements is not None and len(elements | {b}) > max_elements:
                continue
            for child, what in partial_substitutions(
                    structure, a, b, symprec=symprec, max_orbits=max_orbits,
                    max_orbit_sites=max_orbit_sites, scale_volume=scale_volume,
                    _symmetry=symmetry):
                found.append(Candidate(structure=child, generator="saps",
                                       parent_id=parent_id, substitution={a: b},
                                       source=f"saps:{a}->{b}:{what}", probability=p))
        if max_candidates_per_parent is not None:
            found = found[:max_candidates_per_parent]
        out.extend(found)
    logger.info("saps: %d candidates", len(out))
    return out
