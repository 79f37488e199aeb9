"""Tests for SAPS, prototypes, compositions, RSS and fast dedup."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.core.operations import SymmOp

from flywheel.makers.generate.compositions import (
    admission_reason,
    enumerate_compositions,
    is_admissible,
)
from flywheel.makers.generate.core import (
    Candidate,
    dedup,
    default_matcher,
    substitution_candidates,
)
from flywheel.makers.generate.dedup import fast_dedup, fingerprint, isometry_key
from flywheel.makers.generate.prototypes import prototype_candidates
from flywheel.makers.generate.rss import random_structures, target_volume
from flywheel.makers.generate.saps import (
    partial_substitutions,
    saps_candidates,
    substitution_pairs,
)
from tests.structures import (
    cscl as _cscl,
)
from tests.structures import (
    rocksalt as _rocksalt,
)
from tests.structures import (
    rocksalt_conventional as _rocksalt_conventional,
)
from tests.structures import (
    zincblende as _zincblende,
)


def _perovskite(a: float = 3.905) -> Structure:
    return Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5],
                      [0, 0.5, 0.5]])


def _brute_force_classes(structure: Structure, old: str, new: str) -> int:
    """Distinct structures over all proper non-empty subsets of ``old``'s sites."""
    sites = [i for i, site in enumerate(structure) if site.specie.symbol == old]
    children = []
    for k in range(1, len(sites)):
        for subset in itertools.combinations(sites, k):
            child = structure.copy()
            for i in subset:
                child.replace(i, new)
            children.append(child)
    return len(default_matcher().group_structures(children))


# ------------------------------------------------------------------------ SAPS
def test_saps_rocksalt():
    # The 2-atom cell has one Na: nothing partial to do.
    assert partial_substitutions(_rocksalt(), "Na", "K") == []
    # Conventional cell: 4 Na sites, one orbit (4a), G = Fm-3m with its centring
    # translations.  1 of 4 and 3 of 4 are single classes (all sites equivalent);
    # the 6 pairs are one class (any two fcc sites of the cube are related by a
    # translation and a 4-fold axis).  3 = L1_2 Na3K, L1_0 NaK, L1_2 NaK3.
    conventional = _rocksalt_conventional()
    children = partial_substitutions(conventional, "Na", "K")
    assert [c.composition.reduced_formula for c, _ in children] == [
        "KNa3Cl4", "KNaCl2", "K3NaCl4"]
    assert [what for _, what in children] == [
        "1/4 sites of orbit 4a", "2/4 sites of orbit 4a", "3/4 sites of orbit 4a"]
    assert _brute_force_classes(conventional, "Na", "K") == 3
    # K is larger than Na: Vegard-like rescaling grows the cell
    assert conventional.volume < children[0][0].volume < children[2][0].volume


def test_saps_perovskite():
    srtio3 = _perovskite()
    # O sits on one 3-site orbit (3c or 3d); the 3-fold axis makes every single O,
    # and so every pair, equivalent: SrTiO2F and SrTiOF2.
    children = partial_substitutions(srtio3, "O", "F")
    assert [c.composition.reduced_formula for c, _ in children] == [
        "SrTiO2F", "SrTiOF2"]
    assert _brute_force_classes(srtio3, "O", "F") == 2
    assert partial_substitutions(srtio3, "Ti", "Nb") == []  # one Ti per cell
    # 2x2x2 supercell: the 8 Ti form a 2x2x2 periodic cube under Pm-3m plus the 8
    # translations; k of 8 replaced gives 1, 3, 3, 6, 3, 3, 1 classes for k = 1..7
    # (k = 2: edge, face diagonal, body diagonal).  Checked by brute force over
    # all 254 subsets grouped with StructureMatcher.
    supercell = srtio3 * (2, 2, 2)
    children = partial_substitutions(supercell, "Ti", "Nb")
    sizes = [c.composition["Nb"] for c, _ in children]
    assert [sizes.count(k) for k in range(1, 8)] == [1, 3, 3, 6, 3, 3, 1]
    assert _brute_force_classes(supercell, "Ti", "Nb") == len(children) == 20


def test_saps_orbit_level_on_spinel():
    spinel = Structure.from_spacegroup(
        "Fd-3m", Lattice.cubic(8.39), ["Fe", "Fe", "O"],
        [[0, 0, 0], [0.625, 0.625, 0.625], [0.385, 0.385, 0.385]],
    ).get_primitive_structure()
    assert len(spinel) == 14  # Fe 2 tetrahedral (8a) + 4 octahedral (16d), O 8
    children = partial_substitutions(spinel, "Fe", "Co")
    # orbit level: {8a}, {16d} (both = ordinary substitution, left out); site
    # level: 1 of the 2 tetrahedral Fe, and 1, 2, 3 of the 4 octahedral Fe (a
    # tetrahedron of sites: all singles, pairs and triples equivalent): 2 + 1 + 3.
    assert len(children) == 6
    assert [c.composition["Co"] for c, _ in children] == [2, 4, 1, 1, 2, 3]
    assert [what.split()[0] for _, what in children[:2]] == ["orbits", "orbits"]


def test_saps_candidates_respect_threshold_and_provenance():
    parents = [("nacl8", _rocksalt_conventional()), ("sto", _perovskite())]
    allowed = ["Na", "K", "Li", "Cl", "Br", "Sr", "Ba", "Ti", "Zr", "O", "F"]
    everything = substitution_pairs(allowed, threshold=0.0)
    for threshold in (0.03, 0.06):
        cands = saps_candidates(parents, None, allowed, threshold=threshold)
        used = {(*next(iter(c.substitution.items())), c.probability) for c in cands}
        assert all(p >= threshold for *_, p in used)
        expected = {(a, b, p) for a, b, p in everything if p >= threshold
                    and a in {"Na", "Cl", "O"}}  # elements with a partial choice
        assert {(a, b) for a, b, _ in used} == {(a, b) for a, b, _ in expected}
        # the threshold must cut something for this test to mean anything
        assert any(p < threshold and a in {"Na", "Cl", "O"} and p > 0.01
                   for a, b, p in everything)
        assert all(c.generator == "saps" and c.source.startswith("saps:")
                   and c.parent_id in {"nacl8", "sto"} for c in cands)
    # explicit pairs: only those, and only with allowed products
    cands = saps_candidates(parents, [("O", "F"), ("Na", "Rb")], allowed)
    assert [c.formula for c in cands] == ["SrTiO2F", "SrTiOF2"]
    assert cands[0].substitution == {"O": "F"}
    assert cands[0].parent_id == "sto"
    capped = saps_candidates(parents, [("O", "F")], allowed,
                             max_candidates_per_parent=1)
    assert [c.formula for c in capped] == ["SrTiO2F"]


# ---------------------------------------------------------------- compositions
def test_composition_rules():
    assert admission_reason("Li15Si4", "strict") is None  # Li+ and Si4- give -1
    assert admission_reason("Li15Si4", "common") == "intermetallic"
    assert is_admissible("Li15Si4")
    assert admission_reason("Fe3O4") == "ionic (relaxed)"  # mixed valence
    assert admission_reason("Fe3O4", "common") is None
    assert admission_reason("NaCl", "strict") == "ionic"
    assert admission_reason("LiFeO2", "strict") == "ionic"
    assert admission_reason("Li2O2") == "ionic (relaxed)"
    for nonsense in ("NaCl2", "NaCl3", "O2F", "MgF3"):
        assert not is_admissible(nonsense), nonsense
    assert not is_admissible("KO2")  # superoxide: needs O at -1/2
    assert is_admissible("NaCl2", tolerance=1)  # one unit of net charge allowed
    assert admission_reason("Fe") == "element"


def test_enumerate_compositions():
    assert [c.reduced_formula for c in enumerate_compositions(
        ["Na", "Cl"], rule="strict", max_atoms=6)] == ["Cl2", "Na", "NaCl"]
    li_si = {c.reduced_formula for c in enumerate_compositions(["Li", "Si"],
                                                                max_atoms=20)}
    assert "Li15Si4" in li_si
    assert "Li21Si5" not in li_si
    li_si_strict = {c.reduced_formula for c in enumerate_compositions(
        ["Li", "Si"], max_atoms=20, rule="strict")}
    assert li_si_strict == {"Li", "Si", "Li4Si"}  # Li+ and Si4-
    counts = [len(enumerate_compositions(["Li", "Fe", "O"], max_atoms=20,
                                         min_elements=2, rule=rule))
              for rule in ("strict", "common", "relaxed")]
    assert counts == [40, 167, 769]
    for comp in enumerate_compositions(["Li", "Fe", "O"], max_atoms=8):
        amounts = [int(a) for a in comp.values()]
        assert sum(amounts) <= 8
        assert np.gcd.reduce(amounts) == 1


# ------------------------------------------------------------------ prototypes
def test_prototype_candidates():
    cands = prototype_candidates(["Na", "Cl"], max_elements=2, max_sites=8)
    first = cands[0]
    assert first.source == "prototype:AB_cF8_225_a_b"
    assert first.formula == "NaCl"
    assert first.generator == "prototype"
    assert first.substitution in (
        {"Na": "Na", "Cl": "Cl"}, {"Cl": "Na", "Na": "Cl"})
    # contact scaled to Shannon radii Na+ 1.02 + Cl- 1.81: a = 5.66 Å
    conventional_a = (4 * first.structure.volume) ** (1 / 3)
    assert conventional_a == pytest.approx(5.66, abs=0.05)
    assert {c.formula for c in cands} == {"NaCl"}  # Na2Cl, NaCl2 ... fail the rule
    # rock salt and CsCl decorated both ways are single candidates
    sources = [c.source for c in cands]
    assert sources.count("prototype:AB_cF8_225_a_b") == 1
    assert sources.count("prototype:AB_cP2_221_b_a") == 1
    sample = prototype_candidates(["Na", "Cl"], max_elements=2, max_sites=8,
                                  max_candidates=4, seed=3)
    again = prototype_candidates(["Na", "Cl"], max_elements=2, max_sites=8,
                                 max_candidates=4, seed=3)
    assert len(sample) == 4
    assert [c.source for c in sample] == [c.source for c in again]
    full = [(c.source, isometry_key(c.structure)) for c in cands]
    assert all((c.source, isometry_key(c.structure)) in full for c in sample)


# ------------------------------------------------------------------------- RSS
def _min_distance_ok(structure: Structure, factor: float) -> bool:
    """No pair (periodic images included) closer than factor x covalent radii sum."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    radii = np.array([CovalentRadius.radius[s.specie.symbol] for s in structure])
    i, j, _, d = structure.get_neighbor_list(factor * 2 * radii.max() + 0.01)
    return bool(np.all(d >= factor * (radii[i] + radii[j])) and np.all(d >= 0.5))


def test_random_structures_composition_and_distances():
    cands = random_structures("Li2FeO3", n=8, seed=0, max_atoms=12)
    assert len(cands) == 8
    unit = Composition("Li2FeO3")
    for cand in cands:
        s = cand.structure
        z = s.composition.num_atoms / unit.num_atoms
        assert z in (1, 2)
        assert s.composition.almost_equals(unit * z)
        assert _min_distance_ok(s, 0.7)
        assert s.volume == pytest.approx(target_volume(unit) * z)
        assert cand.generator == "rss"
        assert cand.source.startswith("rss:Li2FeO3:Z=")
    again = random_structures("Li2FeO3", n=8, seed=0, max_atoms=12)
    assert [c.source for c in again] == [c.source for c in cands]
    assert all(np.allclose(a.structure.frac_coords, b.structure.frac_coords)
               for a, b in zip(cands, again, strict=True))
    other = random_structures("Li2FeO3", n=8, seed=1, max_atoms=12)
    assert [c.source for c in other] != [c.source for c in cands]


def test_random_structures_prerelax_hook():
    def squash(structures):  # a "relaxation" that collapses every cell
        out = [s.copy() for s in structures]
        for s in out:
            s.scale_lattice(s.volume * 0.05)
        return out

    def identity(structures):
        return [s.copy() for s in structures]

    assert random_structures("NaCl", n=3, seed=2, prerelax=squash) == []
    kept = random_structures("NaCl", n=3, seed=2, prerelax=identity)
    assert len(kept) == 3


# ----------------------------------------------------------------------- dedup
def _c(structure: Structure) -> Candidate:
    return Candidate(structure=structure, parent_id="p")


def _copies(structure: Structure) -> list[Structure]:
    rotated = structure.copy()
    rotated.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0))
    translated = structure.copy()
    translated.translate_sites(list(range(len(structure))), [0.13, 0.27, 0.41])
    scaled = structure.copy()
    scaled.scale_lattice(structure.volume * 1.07)
    permuted = Structure.from_sites(list(reversed(structure.sites)))
    return [rotated, translated, scaled, permuted, structure * (2, 1, 3)]


def test_fast_dedup_merges_copies_keeps_polymorphs():
    nacl = _rocksalt()
    batch = [_c(s) for s in [nacl, *_copies(nacl), _rocksalt_conventional(5.5),
                             _cscl(), _zincblende(), *_copies(_zincblende())]]
    unique, n_batch, n_known = fast_dedup(batch)
    assert (len(unique), n_batch, n_known) == (3, 11, 0)
    assert [u.structure for u in unique] == [nacl, batch[7].structure,
                                             batch[8].structure]
    # same for the slow path and for core.dedup
    assert fast_dedup(batch, use_isometry_key=False)[1:] == (11, 0)
    assert dedup(batch)[1:] == (11, 0)
    # known structures count first and are never returned
    unique, n_batch, n_known = fast_dedup(batch, known=[_cscl(3.0)])
    assert (len(unique), n_batch, n_known) == (2, 11, 1)
    assert fast_dedup([]) == ([], 0, 0)


def test_fingerprint_is_setting_invariant():
    srtio3 = _perovskite()
    shifted = srtio3.copy()  # Ti at the origin: Wyckoff letters 1a/1b and 3c/3d swap
    shifted.translate_sites(list(range(5)), [0.5, 0.5, 0.5])
    keys = {fingerprint(s) for s in (srtio3, shifted, srtio3 * (2, 2, 1),
                                     *_copies(srtio3))}
    assert keys == {("SrTiO3", 221, ((8, 3), (22, 1), (38, 1)))}
    assert len({isometry_key(s) for s in (srtio3, shifted, *_copies(srtio3))}) == 1
    assert fingerprint(_zincblende())[:2] == ("NaCl", 216)


def test_isometry_key_separates_homometric_orderings():
    # Two Mn/Fe orderings of one 16-site MnFeO2 cell (Pmma, P4_122): every site has
    # the same neighbour distances to 8 Å and the same bond angles to 4.2 Å, so a
    # distance-only key merged them; only the Pmma cell has a pure translation.
    cations = [[0.25, 0.75, 0.25], [0.5, 0.5, 0.5], [0.25, 0.25, 0.75], [0.5, 0, 0],
               [0.75, 0.75, 0.75], [0, 0.5, 0], [0.75, 0.25, 0.25], [0, 0, 0.5]]
    oxygens = [[0.5, 0, 0.5], [0.25, 0.25, 0.25], [0.5, 0.5, 0], [0.25, 0.75, 0.75],
               [0, 0, 0], [0.75, 0.25, 0.75], [0, 0.5, 0.5], [0.75, 0.75, 0.25]]
    pmma = Structure(Lattice.cubic(5.834), ["Mn"] * 4 + ["Fe"] * 4 + ["O"] * 8,
                     cations + oxygens)
    p4122 = Structure(Lattice.cubic(5.834), ["Mn", "Mn", "Fe", "Mn", "Mn", "Fe", "Fe",
                                             "Fe"] + ["O"] * 8, cations + oxygens)
    assert fingerprint(pmma, symprec=0.01)[1] == 51
    assert fingerprint(p4122, symprec=0.01)[1] == 91
    assert not default_matcher().fit(pmma, p4122)
    assert isometry_key(pmma) != isometry_key(p4122)
    assert isometry_key(pmma) == isometry_key(_copies(pmma)[-1])  # supercell
    unique, n_batch, _ = fast_dedup([_c(pmma), _c(p4122), *map(_c, _copies(p4122))])
    assert (len(unique), n_batch) == (2, 5)


def test_fast_dedup_agrees_with_core_dedup():
    from flywheel.makers.seeds.core import builtin_seeds

    seeds = builtin_seeds(["Li", "Na", "Cl", "O"], max_seeds=40)
    parents = [(f"s{i}", s.structure) for i, s in enumerate(seeds)]
    cands = substitution_candidates(parents, ["Li", "Na", "K", "Cl", "Br", "O", "S"])
    rng = np.random.default_rng(0)
    extra = []
    for i in rng.choice(len(cands), size=60, replace=False):
        s = cands[int(i)].structure.copy()
        s.perturb(0.01)  # small: keeps the symmetry at symprec 0.1
        extra.append(_c(s))
    for i in rng.choice(len(cands), size=40, replace=False):
        extra.append(_c(_copies(cands[int(i)].structure)[int(i) % 5]))
    batch = cands + extra
    rng.shuffle(batch)
    assert len(batch) > 250
    slow = dedup(batch)
    fast = fast_dedup(batch)
    assert fast[1:] == slow[1:]
    assert [id(c) for c in fast[0]] == [id(c) for c in slow[0]]
    assert len(fast[0]) < len(cands)  # substitution itself makes duplicates
