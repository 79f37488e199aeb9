"""Tests for flywheel.makers.seeds.core."""

from __future__ import annotations

import pytest
from monty.serialization import dumpfn
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import DummySpecies, Element, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from flywheel.makers.generate.structures import check_structure
from flywheel.makers.seeds.core import (
    Seed,
    builtin_seeds,
    elemental_reference,
    load_seed_file,
)


@pytest.fixture(scope="module")
def li_fe_o_seeds() -> list[Seed]:
    return builtin_seeds(["Li", "Fe", "O"])


def _rocksalt(a: float = 5.64, species: tuple[str, str] = ("Na", "Cl")) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species),
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def _key(seeds: list[Seed]) -> list[tuple[str, str, Structure]]:
    return [(s.source, s.label, s.structure) for s in seeds]


# ------------------------------------------------------------------ builtin_seeds
def test_builtin_seeds_deterministic_and_sized(li_fe_o_seeds):
    again = builtin_seeds(["O", "Fe", "Li", "Fe"])  # order and repeats do not matter
    assert _key(again) == _key(li_fe_o_seeds)
    assert len(li_fe_o_seeds) == 30  # default cap max_seeds=30


def test_builtin_seeds_one_elemental_reference_per_element(li_fe_o_seeds):
    elemental = [s for s in li_fe_o_seeds if s.source.startswith("element:")]
    formulas = [s.structure.composition.reduced_formula for s in elemental]
    assert formulas == ["Fe", "Li", "O2"]
    sources = [s.source for s in elemental]
    assert sources == ["element:bcc", "element:bcc", "element:diatomic"]
    # elemental references come first
    assert li_fe_o_seeds[:3] == elemental


def test_builtin_seeds_sane_and_in_chemical_space(li_fe_o_seeds):
    for seed in li_fe_o_seeds:
        symbols = {el.symbol for el in seed.structure.composition.elements}
        assert symbols <= {"Li", "Fe", "O"}
        assert len(symbols) <= 2
        assert check_structure(seed.structure) is None, seed.label
        assert all(isinstance(sp, Element) for sp in seed.structure.composition)
        assert seed.source.startswith(("element:", "prototype:"))


def test_builtin_seeds_contain_known_decorations(li_fe_o_seeds):
    matcher = StructureMatcher()  # scale=True: volume estimates need not be exact
    antifluorite = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.61), ["O", "Li"],
                                             [[0, 0, 0], [0.25, 0.25, 0.25]])
    rocksalt_feo = _rocksalt(4.33, ("Fe", "O"))
    corundum = Structure.from_spacegroup("R-3c", Lattice.hexagonal(5.04, 13.75),
                                         ["Fe", "O"],
                                         [[0, 0, 0.3553], [0.3059, 0, 0.25]])
    for reference in (antifluorite, rocksalt_feo, corundum):
        hits = [s for s in li_fe_o_seeds if matcher.fit(s.structure, reference)]
        assert len(hits) == 1, reference.composition.reduced_formula
    feo = next(s for s in li_fe_o_seeds if matcher.fit(s.structure, rocksalt_feo))
    assert feo.source == "prototype:AB_cF8_225_a_b"
    # ionic-radius volume estimate: experiment is 10.2 Å^3/atom
    assert 9.5 < feo.structure.volume / len(feo.structure) < 11.0


def test_builtin_seeds_cap_keeps_a_prefix(li_fe_o_seeds):
    small = builtin_seeds(["Li", "Fe", "O"], max_seeds=9)
    assert _key(small) == _key(li_fe_o_seeds[:9])
    # round robin over the binary systems, most common prototypes first
    binaries = [s.structure.composition for s in small[3:]]
    assert [c.chemical_system for c in binaries] == ["Fe-Li", "Fe-O", "Li-O"] * 2
    formulas = [c.reduced_formula for c in binaries]
    assert formulas == ["LiFe", "FeO", "Li2O", "Li2Fe", "Fe2O3", "Li2O"]
    assert [s.source for s in small[3:6]] == ["prototype:AB_cF8_225_a_b"] * 2 + [
        "prototype:AB2_cF12_225_a_c"]


def test_builtin_seeds_elements_only():
    seeds = builtin_seeds(["Cu", "Si", "Mn"], max_elements=1)
    assert [s.source for s in seeds] == ["element:fcc", "element:A_cI58_217_ac2g",
                                         "element:diamond"]


def test_elemental_reference_volume_from_molar_volume():
    cu = elemental_reference("Cu").structure  # fcc, 11.8 Å^3/atom -> a = 3.61 Å
    assert len(cu) == 1
    assert cu.volume == pytest.approx(11.8, abs=0.1)
    h2 = elemental_reference("H").structure
    assert check_structure(h2) is None
    assert min(h2.distance_matrix[0][1:]) == pytest.approx(0.741, abs=1e-3)


# ------------------------------------------------------------------ load_seed_file
def test_load_seed_file_round_trips(tmp_path):
    matcher = StructureMatcher()
    nacl = _rocksalt()
    CifWriter(nacl).write_file(tmp_path / "nacl.cif")
    Poscar(nacl).write_file(tmp_path / "POSCAR")
    Poscar(nacl).write_file(tmp_path / "nacl.vasp")
    entry = ComputedStructureEntry(nacl, energy=-27.0)
    dumpfn(entry, tmp_path / "entry.json")
    dumpfn([entry, nacl], tmp_path / "list.json")
    for name, n in [("nacl.cif", 1), ("POSCAR", 1), ("nacl.vasp", 1), ("entry.json", 1),
                    ("list.json", 2)]:
        loaded = load_seed_file(tmp_path / name)
        assert len(loaded) == n, name
        assert all(isinstance(s, Structure) for s in loaded)
        assert all(matcher.fit(s, nacl) for s in loaded), name
        assert loaded[0].composition.reduced_formula == "NaCl"


def test_load_seed_file_extxyz(tmp_path):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    nacl, kcl = _rocksalt(), _rocksalt(6.29, ("K", "Cl"))
    write(tmp_path / "two.extxyz", [AseAtomsAdaptor.get_atoms(s) for s in (nacl, kcl)],
          format="extxyz")
    loaded = load_seed_file(tmp_path / "two.extxyz")
    assert [s.composition.reduced_formula for s in loaded] == ["NaCl", "KCl"]
    assert loaded[1].lattice.a == pytest.approx(6.29)


def test_load_seed_file_errors(tmp_path):
    missing = tmp_path / "nope.cif"
    with pytest.raises(FileNotFoundError, match="nope.cif"):
        load_seed_file(missing)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(ValueError, match="garbage.json"):
        load_seed_file(garbage)
    empty = tmp_path / "empty.cif"
    empty.write_text("data_empty\n")
    with pytest.raises(ValueError, match="empty.cif"):
        load_seed_file(empty)


# ------------------------------------------------------------------ check_structure
def test_check_structure_accepts_sane():
    assert check_structure(_rocksalt()) is None


def test_check_structure_rejects_overlap_with_distance():
    overlapping = Structure(Lattice.cubic(5.0), ["Na", "Cl"],
                            [[0, 0, 0], [0.082, 0, 0]])  # 0.41 Å
    reason = check_structure(overlapping)
    assert reason is not None
    assert "0.41 Å" in reason
    assert "atoms 0 (Na) and 1 (Cl)" in reason


def test_check_structure_rejects_covalent_overlap():
    cs2 = Structure(Lattice.cubic(6.0), ["Cs", "Cs"], [[0, 0, 0], [0.25, 0, 0]])
    reason = check_structure(cs2)
    assert reason is not None
    assert "1.50 Å" in reason and "covalent" in reason


def test_check_structure_other_reasons():
    tiny = Structure(Lattice.cubic(1.0), ["H"], [[0, 0, 0]])
    assert "volume per atom 1.00" in check_structure(tiny)
    dummy = Structure(Lattice.cubic(4.0), [DummySpecies("X")], [[0, 0, 0]])
    assert "non-element" in check_structure(dummy)
    disordered = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]])
    assert "disordered" in check_structure(disordered)
    assert "more than 1 sites" in check_structure(_rocksalt(), max_sites=1)
    empty = Structure(Lattice.cubic(4.0), [], [])
    assert check_structure(empty) == "structure has no sites"
