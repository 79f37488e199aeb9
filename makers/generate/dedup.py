"""Fast structural deduplication: cheap keys first, StructureMatcher only where needed.

:func:`fast_dedup` has the contract of :func:`flywheel.makers.generate.core.dedup`
(first occurrence in input order survives; known structures are checked first) and
decides each candidate in up to two stages:

1. **Isometry key** (:func:`isometry_key`, ~0.1-0.6 ms).  A hash of (a) the
   multiset of site colours after three rounds of colour refinement
   (Weisfeiler-Lehman): a site starts as its element and each round absorbs the
   multiset of (neighbour colour, distance) over neighbours within
   ``2 (V/N)^(1/3)``, distances divided by ``(V/N)^(1/3)`` and rounded to 1e-3,
   multiplicities divided by their gcd; and (b) the number of atoms in the
   primitive cell (pure translations counted to 1e-4 in fractional coordinates).
   Rotated, translated, permuted, volume-scaled, supercell and other-setting copies
   of a crystal share the key; oxidation states are ignored (as by the default
   ``ElementComparator``).  A candidate whose key was seen before gets the verdict
   of that earlier structure without a matcher call.  Different crystals share a
   key only if they are indistinguishable by (a) and (b) (homometric structures
   with equal primitive cells; mirror images, which StructureMatcher matches too)
   or by a hash collision: the only ways this stage can merge what StructureMatcher
   keeps apart.  (a) alone merged one pair among 741 distinct structures of the
   benchmark (two MnFeO2 cation orderings, tested); none is known with (b).
2. **Symmetry bucket** (:func:`fingerprint`, one spglib call: 0.3 ms for triclinic
   cells, 2-35 ms for cubic ones on this machine).  Reduced element formula,
   space-group number at ``symprec`` (0.1 Å) and the multiset of (element, orbit size
   in the primitive cell).  StructureMatcher (``matcher``, default
   :func:`~flywheel.makers.generate.core.default_matcher`) runs only against the
   structures of the same bucket, reduced lazily on first use (Niggli of spglib's
   primitive cell, which that spglib call yields anyway).

Why orbit sizes and not Wyckoff letters: letters depend on the origin that spglib
picks, so a translated copy of cubic SrTiO3 reads Sr 1b, Ti 1a, O 3d instead of Sr 1a,
Ti 1b, O 3c; sizes (multiplicities) are the same in every setting.

The risk of stage 2: StructureMatcher (stol 0.3) matches distortions far beyond the
0.1 Å that spglib tolerates, so a distorted copy of a crystal lands in a lower-
symmetry bucket and is kept as new (a *missed* duplicate: extra work downstream,
never a lost candidate).  Measured (``benchmarks/generation.py``), the share of
matched pairs split: 0 % for copies with every atom displaced by 0.01 Å, 45 % by
0.05 Å, 96 % by 0.1 Å; 5 % for cells strained by up to 1 %, 47 % by up to 3 %; 97 %
of the StructureMatcher matches between same-formula MP structures.
Generated candidates carry their parents' exact symmetry, so within a batch the
symmetry bucket is the default (``level``); comparisons with ``known`` (relaxed,
often distorted database structures) use the formula bucket (``known_level``),
exactly like ``core.dedup``.  ``level="formula"`` gives ``core.dedup``'s comparisons
everywhere, still with the isometry-key shortcut.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Composition, Structure

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Sequence

    from pymatgen.analysis.structure_matcher import StructureMatcher

    from flywheel.makers.generate.core import Candidate

__all__ = ["LEVELS", "fast_dedup", "fingerprint", "isometry_key", "match_structures"]

logger = logging.getLogger(__name__)

LEVELS = ("orbits", "spacegroup", "formula")

# Neighbour shell of the isometry key, in units of (V/N)^(1/3): ~33 neighbours per
# site, i.e. two to three coordination shells in dense solids.
_KEY_CUTOFF = 2.0
_KEY_DECIMALS = 3
_KEY_ROUNDS = 3


def _element_formula(structure: Structure) -> str:
    return Composition(structure.composition.element_composition).reduced_formula


def _atomic_numbers(structure: Structure) -> np.ndarray:
    # Through site.species: 5x faster than Structure.atomic_numbers, whose
    # site.specie re-checks order on every call.  Ordered structures only.
    return np.fromiter((next(iter(site.species)).Z for site in structure),
                       dtype=np.int64, count=len(structure))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Mix 64-bit integers (splitmix64 finaliser); uint64 arithmetic wraps."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _translation_count(structure: Structure, z: np.ndarray, tol: float) -> int:
    """Count the lattice translations in the cell (n / primitive size).

    Candidates are the vectors from one atom of the rarest element to the others of
    that element; a candidate is a translation if it maps every element's sites
    onto themselves within ``tol`` in fractional coordinates (exact copies only need
    a numerical tolerance).
    """
    values, counts = np.unique(z, return_counts=True)
    if np.gcd.reduce(counts) == 1:
        return 1  # a translation maps each element onto itself: it divides each count
    frac = structure.frac_coords
    rare = np.flatnonzero(z == values[np.argmin(counts)])
    shifts = frac[rare] - frac[rare[0]]  # (m, 3), the first is zero
    ok = np.ones(len(shifts), dtype=bool)
    for value in values:
        sites = frac[z == value]
        diff = (sites[None, :, None, :] + shifts[:, None, None, :]
                - sites[None, None, :, :])  # (m, k, k, 3)
        diff -= np.round(diff)
        ok &= (np.abs(diff).max(axis=-1).min(axis=2) < tol).all(axis=1)
    return int(np.count_nonzero(ok))


def isometry_key(structure: Structure) -> bytes:
    """Hash shared by all isometric copies of a crystal, up to volume scaling.

    Invariant under rotation, translation, site permutation, volume scaling,
    supercells and the choice of unit cell; oxidation states are ignored.  See the
    module docstring for what it can confuse (homometric structures, mirror images).

    Parameters
    ----------
    structure
        An ordered structure.

    Returns
    -------
    bytes
        A 16-byte digest.
    """
    from pymatgen.optimization.neighbors import find_points_in_spheres

    n = len(structure)
    lattice = np.ascontiguousarray(structure.lattice.matrix, dtype=float)
    cart = np.ascontiguousarray(structure.cart_coords, dtype=float)
    scale = (structure.volume / n) ** (1 / 3)
    z = _atomic_numbers(structure)
    # The C kernel behind Structure.get_neighbor_list, without its Python overhead
    # (a third of the time of this function for small cells).
    centers, neighbors, _, dists = find_points_in_spheres(
        cart, cart, r=_KEY_CUTOFF * scale, pbc=np.ones(3, dtype=np.int64),
        lattice=lattice, tol=1e-8)
    keep = (centers != neighbors) | (dists > 1e-8)
    centers, neighbors, dists = centers[keep], neighbors[keep], dists[keep]
    q = _splitmix64(np.rint(dists / scale * 10**_KEY_DECIMALS).astype(np.uint64))
    # Colour refinement (Weisfeiler-Lehman) with distances: a site's colour starts as
    # its element; each round mixes in the multiset of (neighbour colour, rounded
    # distance), summed as 64-bit hashes (order-free, no Python loop over sites).
    # Each round widens the view by one cutoff and sees more than the per-site
    # distance spectrum (which e.g. many cation orderings of one lattice share).
    colors = _splitmix64(z.astype(np.uint64))
    for _ in range(_KEY_ROUNDS):
        aggregate = np.zeros(n, dtype=np.uint64)
        np.add.at(aggregate, centers, _splitmix64(colors[neighbors] ^ q))
        colors = _splitmix64(colors * np.uint64(0x9E3779B97F4A7C15) + aggregate)
    environments, counts = np.unique(colors, return_counts=True)
    # Dividing by the gcd makes a k-fold supercell give the same multiset.
    counts //= np.gcd.reduce(counts)
    digest = hashlib.blake2b(environments.tobytes(), digest_size=16)
    digest.update(counts.astype(np.int64).tobytes())
    # Two MnFe orderings of one 16-site MnFeO2 cell (Pmma, P4_122; in the tests)
    # share every site's neighbour distances to 8 Å and bond angles to 4.2 Å, and so
    # the colours above; only the Pmma cell has a pure translation.
    digest.update(str(n // _translation_count(structure, z, 1e-4)).encode())
    return digest.digest()


def _analyse(
    structure: Structure, symprec: float, level: str
) -> tuple[tuple[Hashable, ...], Structure | None]:
    """Bucket key and, when spglib ran, the primitive cell it found (same frame)."""
    import spglib

    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    formula = _element_formula(structure)
    if level == "formula":
        return (formula,), None
    z = _atomic_numbers(structure)
    cell = (structure.lattice.matrix, structure.frac_coords, z)
    dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if dataset is None:
        return ((formula, 0, ()) if level == "orbits" else (formula, 0)), None
    mapping = dataset.mapping_to_primitive
    representatives = np.unique(mapping, return_index=True)[1]
    # spglib's primitive lattice is in the input's Cartesian frame: the primitive
    # cell comes for free, instead of ~2-10 ms of get_primitive_structure per fit.
    lattice = dataset.primitive_lattice
    primitive = Structure(lattice, [structure.species[i] for i in representatives],
                          structure.cart_coords[representatives] @ np.linalg.inv(
                              lattice))
    if level == "spacegroup":
        return (formula, int(dataset.number)), primitive
    factor = len(structure) // len(representatives)
    # crystallographic_orbits use the symmetry of the primitive cell; equivalent_atoms
    # only the operations that map the input cell onto itself, which splits the O
    # orbit of a 2x2x1 SrTiO3 supercell in two.
    labels, sizes = np.unique(dataset.crystallographic_orbits, return_counts=True)
    orbits = sorted((int(z[i]), int(size) // factor)
                    for i, size in zip(labels, sizes, strict=True))
    return (formula, int(dataset.number), tuple(orbits)), primitive


def fingerprint(
    structure: Structure, *, symprec: float = 0.1, level: str = "orbits"
) -> tuple[Hashable, ...]:
    """Cheap bucket key: structures StructureMatcher could match should share it.

    Parameters
    ----------
    structure
        An ordered structure.
    symprec
        spglib distance tolerance in Å.
    level
        ``"orbits"``: (reduced element formula, space-group number, sorted
        (Z, orbit size in the primitive cell) pairs); ``"spacegroup"``: the first two;
        ``"formula"``: the formula only.  A structure spglib cannot analyse gets
        space group 0.

    Returns
    -------
    tuple
        The key.
    """
    return _analyse(structure, symprec, level)[0]


def _coarsen(key: tuple, level: str, target: str) -> tuple | None:
    """``key`` of ``level`` cut down to ``target``; None if ``target`` is finer."""
    depth = {"formula": 1, "spacegroup": 2, "orbits": 3}
    if depth[target] > depth[level]:
        return None
    return key[:depth[target]]


@dataclass
class _Entry:
    """A structure in a bucket; reduced the first time it is compared."""

    structure: Structure
    primitive: Structure | None = field(default=None, repr=False)
    reduced: Structure | None = field(default=None, repr=False)


def _reduced(entry: _Entry, use_primitive: bool) -> Structure:
    """The entry reduced once, as StructureMatcher would on every fit (see core.dedup).

    ``attempt_supercell`` covers a spglib primitive cell that is larger than
    pymatgen's (looser) one would be.
    """
    if entry.reduced is None:
        if use_primitive and entry.primitive is not None:
            entry.reduced = entry.primitive.get_reduced_structure()
        else:
            red = entry.structure.get_reduced_structure(reduction_algo="niggli")
            entry.reduced = red.get_primitive_structure() if use_primitive else red
    return entry.reduced


def match_structures(
    queries: Sequence[Structure],
    known: Sequence[Structure],
    matcher: StructureMatcher | None = None,
    *,
    symprec: float = 0.1,
    level: str = "formula",
    use_isometry_key: bool = True,
    closest: bool = False,
) -> list[int | None]:
    """For each query, the index of a structure of ``known`` it matches.

    The comparisons of :func:`fast_dedup` with its ``known`` structures: an equal
    :func:`isometry_key` decides at once, otherwise ``matcher`` (default
    :func:`~flywheel.makers.generate.core.default_matcher`) runs against the known
    structures of the same bucket (``level``; default the reduced formula, because
    relaxed structures are often distorted copies of one another).

    Parameters
    ----------
    queries
        Ordered structures to look up (e.g. oracle results).
    known
        Ordered structures to look them up in (e.g. the reference structures).
    matcher, symprec, level, use_isometry_key
        As for :func:`fast_dedup` (``level`` as its ``known_level``).
    closest
        Among several matches, return the one with the smallest RMS displacement
        (``StructureMatcher.get_rms_dist``) instead of the first: what a match is
        reported as (e.g. which polymorph's id) then does not depend on the order
        of ``known``.

    Returns
    -------
    list
        Per query, an index into ``known`` or None (no match).
    """
    from flywheel.makers.generate.core import default_matcher

    matcher = matcher or default_matcher()
    use_primitive = getattr(matcher, "_primitive_cell", True)
    formulas = {_element_formula(q) for q in queries}
    by_key: dict[bytes, int] = {}
    buckets: dict[tuple, list[tuple[int, _Entry]]] = defaultdict(list)
    for i, structure in enumerate(known):
        if _element_formula(structure) not in formulas:
            continue
        if use_isometry_key:
            by_key.setdefault(isometry_key(structure), i)
        key, prim = _analyse(structure, symprec, level)
        buckets[key].append((i, _Entry(structure, prim)))
    out: list[int | None] = []
    for query in queries:
        if use_isometry_key and (hit := by_key.get(isometry_key(query))) is not None:
            out.append(hit)
            continue
        key, prim = _analyse(query, symprec, level)
        entry = _Entry(query, prim)
        hits = (i for i, other in buckets.get(key, ())
                if matcher.fit(_reduced(entry, use_primitive),
                               _reduced(other, use_primitive),
                               skip_structure_reduction=True))
        if not closest:
            out.append(next(hits, None))
            continue
        scored = []
        for i in hits:
            rms = matcher.get_rms_dist(query, known[i])
            scored.append((rms[0] if rms is not None else float("inf"), i))
        out.append(min(scored)[1] if scored else None)
    return out


# Verdicts cached per isometry key.
_UNIQUE, _BATCH, _KNOWN = 0, 1, 2


def fast_dedup(
    candidates: Iterable[Candidate],
    known: Iterable[Structure] = (),
    matcher: StructureMatcher | None = None,
    *,
    symprec: float = 0.1,
    level: str = "orbits",
    known_level: str = "formula",
    use_isometry_key: bool = True,
) -> tuple[list[Candidate], int, int]:
    """Remove candidates that duplicate a known structure or an earlier candidate.

    Same contract as :func:`flywheel.makers.generate.core.dedup`; the two stages are
    described in the module docstring.  ``candidates`` is read once, so a generator
    works and only the unique candidates are held.

    Parameters
    ----------
    candidates
        Candidates to deduplicate.
    known
        Structures that already exist (e.g. the database); never returned.  Only
        those whose formula occurs among the candidates are analysed, so
        ``candidates`` is materialised first when ``known`` is not empty.
    matcher
        Structure matcher; default :func:`~flywheel.makers.generate.core.
        default_matcher` (elements only, ``scale``, ``primitive_cell``,
        ``attempt_supercell``).
    symprec
        spglib tolerance (Å) of the buckets.
    level
        Bucket of the comparisons within the batch (:func:`fingerprint`).
    known_level
        Bucket of the comparisons with ``known``.  Default ``"formula"``, as in
        ``core.dedup``: relaxed database structures are often distorted copies of
        one another (every StructureMatcher match among same-formula pairs of MP
        structures changed space group, see ``docs/generators/dedup.md``), and a
        missed match with the database costs an oracle calculation.
    use_isometry_key
        Stage 1 on/off; off, every candidate goes through spglib and, if its
        bucket is not empty, the matcher.

    Returns
    -------
    tuple
        (unique candidates in input order, number of duplicates within the batch,
        number of duplicates of ``known``).
    """
    from flywheel.makers.generate.core import default_matcher

    matcher = matcher or default_matcher()
    use_primitive = getattr(matcher, "_primitive_cell", True)

    def _matches(entry: _Entry, bucket: list[_Entry]) -> bool:
        return any(matcher.fit(_reduced(entry, use_primitive),
                               _reduced(other, use_primitive),
                               skip_structure_reduction=True) for other in bucket)

    verdicts: dict[bytes, int] = {}
    known_buckets: dict[tuple, list[_Entry]] = defaultdict(list)
    unique_buckets: dict[tuple, list[_Entry]] = defaultdict(list)
    known = list(known)
    if known:
        candidates = list(candidates)
        formulas = {_element_formula(c.structure) for c in candidates}
        for structure in known:
            if _element_formula(structure) not in formulas:
                continue  # other formulas are never compared
            if use_isometry_key:
                verdicts[isometry_key(structure)] = _KNOWN
            key, prim = _analyse(structure, symprec, known_level)
            known_buckets[key].append(_Entry(structure, prim))

    unique: list[Candidate] = []
    n_batch = n_known = n_by_key = 0
    for candidate in candidates:
        structure = candidate.structure
        ikey = isometry_key(structure) if use_isometry_key else None
        verdict = verdicts.get(ikey) if ikey is not None else None
        if verdict is None:
            key, prim = _analyse(structure, symprec, level)
            entry = _Entry(structure, prim)
            kkey = _coarsen(key, level, known_level) or _analyse(
                structure, symprec, known_level)[0]
            if known_buckets.get(kkey) and _matches(entry, known_buckets[kkey]):
                verdict = _KNOWN
            elif unique_buckets.get(key) and _matches(entry, unique_buckets[key]):
                verdict = _BATCH
            else:
                verdict = _UNIQUE
                unique_buckets[key].append(entry)
                unique.append(candidate)
            if ikey is not None:
                verdicts[ikey] = verdict
        else:
            n_by_key += 1
            # A copy of something already unique is a duplicate within the batch.
            verdict = _BATCH if verdict == _UNIQUE else verdict
        if verdict == _KNOWN:
            n_known += 1
        elif verdict == _BATCH:
            n_batch += 1
    logger.info("fast_dedup: %d unique, %d duplicates within batch, %d duplicates of "
                "known (%d decided by isometry key)", len(unique), n_batch, n_known,
                n_by_key)
    return unique, n_batch, n_known
