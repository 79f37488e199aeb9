"""Tests for flywheel.makers.generate.core."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Element, Lattice, Structure
from pymatgen.core.operations import SymmOp

from flywheel.makers.generate.core import Candidate, dedup, substitution_candidates
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

HALIDES = ["Na", "K", "Cl", "Br"]


def _c(structure: Structure) -> Candidate:
    return Candidate(structure=structure, parent_id="p")


# ---------------------------------------------------------------------- substitution
def test_substitution_from_rocksalt_nacl():
    nacl = _rocksalt()
    cands = substitution_candidates([("nacl", nacl)], HALIDES)
    # most probable first: Na->K (0.019), Cl->Br (0.018), both (0.0036)
    assert [c.formula for c in cands] == ["KCl", "NaBr", "KBr"]
    assert [c.substitution for c in cands] == [{"Na": "K"}, {"Cl": "Br"},
                                               {"Cl": "Br", "Na": "K"}]
    assert [c.chemsys for c in cands] == ["Cl-K", "Br-Na", "Br-K"]
    assert all(c.parent_id == "nacl" and c.generator == "substitution" for c in cands)
    assert all(isinstance(sp, Element) for c in cands for sp in c.structure.composition)
    assert cands[0].probability == pytest.approx(0.019, abs=5e-4)
    # volumes rescaled with ionic radii: K+ is larger than Na+, Br- than Cl-
    kcl, nabr, kbr = (c.structure.volume for c in cands)
    assert nacl.volume < nabr < kbr
    assert nacl.volume < kcl < kbr
    assert len(nacl) == 2 and all(len(c.structure) == 2 for c in cands)


def test_substitution_threshold_gives_subset():
    nacl = _rocksalt()
    low = substitution_candidates([("nacl", nacl)], HALIDES, threshold=1e-3)
    high = substitution_candidates([("nacl", nacl)], HALIDES, threshold=5e-3)
    none = substitution_candidates([("nacl", nacl)], HALIDES, threshold=2e-2)
    assert len(low) == 3 > len(high) == 2 > len(none) == 0
    assert {c.formula for c in high} == {"KCl", "NaBr"}
    assert {c.formula for c in high} < {c.formula for c in low}


def test_substitution_limits():
    nacl = _rocksalt()
    assert [c.formula for c in substitution_candidates(
        [("nacl", nacl)], HALIDES, max_per_parent=1)] == ["KCl"]
    assert substitution_candidates([("nacl", nacl)], HALIDES, max_elements=1) == []
    assert substitution_candidates([("nacl", nacl)], HALIDES, max_sites=1) == []
    # elements outside the allowed list must be replaced: Cl has no allowed substitute
    assert substitution_candidates([("nacl", nacl)], ["K", "Na"]) == []


def test_substitution_metals_use_element_level_model():
    bcc_fe = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cands = substitution_candidates([("fe", bcc_fe)], ["Fe", "Co", "Mn", "O"])
    assert [(c.formula, c.substitution) for c in cands] == [
        ("Mn", {"Fe": "Mn"}), ("Co", {"Fe": "Co"})]
    # a metal never turns into an anion, although the λ table has Li+ <-> O2-
    b2 = Structure(Lattice.cubic(2.9), ["Li", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cands = substitution_candidates([("b2", b2)], ["Li", "Fe", "O", "Na"])
    assert {c.formula for c in cands} == {"NaFe", "NaLi"}


def test_substitution_is_deterministic_over_parents():
    parents = [("nacl", _rocksalt()), ("kbr", _rocksalt(6.6, ("K", "Br")))]
    first = substitution_candidates(parents, HALIDES)
    second = substitution_candidates(parents, HALIDES)
    assert [(c.parent_id, c.formula, c.substitution) for c in first] == [
        (c.parent_id, c.formula, c.substitution) for c in second]
    assert [c.parent_id for c in first] == ["nacl"] * 3 + ["kbr"] * 3
    # for KBr, Br -> Cl is more probable than K -> Na
    assert [c.formula for c in first[3:]] == ["KCl", "NaBr", "NaCl"]


# ---------------------------------------------------------------------- dedup
def test_dedup_symmetry_copies_and_polymorphs():
    nacl = _rocksalt()
    rotated = nacl.copy()
    rotated.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0))
    translated = nacl.copy()
    translated.translate_sites(list(range(len(nacl))), [0.13, 0.27, 0.41])
    supercell = nacl * (2, 1, 1)
    batch = [_c(s) for s in (nacl, rotated, translated, supercell, _cscl())]
    unique, n_batch, n_known = dedup(batch)
    assert (len(unique), n_batch, n_known) == (2, 3, 0)
    assert unique[0] is batch[0] and unique[1] is batch[4]


def test_dedup_keeps_rocksalt_and_zincblende_apart():
    unique, n_batch, n_known = dedup([_c(_rocksalt()), _c(_zincblende())])
    assert (len(unique), n_batch, n_known) == (2, 0, 0)


def test_dedup_counts_known_duplicates():
    # different volume, conventional cell, oxidation states: still the same crystal
    known_conv = _rocksalt_conventional(5.5)
    known_conv.add_oxidation_state_by_element({"Na": 1, "Cl": -1})
    batch = [_c(_rocksalt()), _c(_cscl()), _c(_rocksalt(5.7))]
    known = [known_conv, _rocksalt(6.6, ("K", "Br"))]
    unique, n_batch, n_known = dedup(batch, known=known)
    assert (len(unique), n_batch, n_known) == (1, 0, 2)
    assert unique[0] is batch[1]
    # a different known structure of the same formula does not count
    unique, n_batch, n_known = dedup(batch, known=[_zincblende()])
    assert (len(unique), n_batch, n_known) == (2, 1, 0)


def test_dedup_keeps_input_order_and_handles_empty():
    assert dedup([]) == ([], 0, 0)
    perturbed = _rocksalt()
    perturbed.perturb(0.02, min_distance=0.01)
    batch = [_c(_cscl()), _c(_rocksalt()), _c(perturbed)]
    unique, n_batch, _ = dedup(batch)
    assert unique == batch[:2] and n_batch == 1
    assert np.allclose(unique[1].structure.lattice.matrix,
                       batch[1].structure.lattice.matrix)
