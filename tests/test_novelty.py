"""Known vs new: oracle results are matched against the reference structures.

The references are the Materials Project Li-Fe-O entries shipped with the quickstart
(examples/references, CC-BY 4.0), so these tests run on a fresh clone.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

from flywheel.config import load_campaign

MP_FILE = (Path(__file__).resolve().parents[1] / "examples" / "references"
           / "mp_Li-Fe-O_entries.json.gz")


def _config(tmp_path, db_uri, **sections):
    data = {
        "name": f"nov{uuid.uuid4().hex[:6]}",
        "chemistry": {"elements": ["Li", "Fe", "O"], "max_sites": 16},
        "hull": {"references": [str(MP_FILE)]},
        "database": {"uri": db_uri},
        **sections,
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_campaign(path)


def _mp(entry_id: str):
    from monty.serialization import loadfn

    return next(e for e in loadfn(MP_FILE) if e.entry_id == entry_id)


def _store(db, material_id: str, structure, energy_per_atom: float, generator: str,
           round_index: int = 1) -> None:
    from flywheel.makers.relax.core import OracleResult
    from flywheel.makers.relax.jobs import store_result

    cand = {"candidate_id": material_id, "generator": generator,
            "selected_by": "filter"}
    result = OracleResult(structure, energy=energy_per_atom * len(structure),
                          converged=True)
    store_result(db, cand, result, round_index, "chgnet")


def _rotated_supercell(structure):
    from pymatgen.core.operations import SymmOp

    big = structure * (1, 2, 1)
    big.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0))
    return big


def _shuffled(structure, seed=0):
    from pymatgen.core import Structure

    order = np.random.default_rng(seed).permutation(len(structure))
    return Structure.from_sites([structure[i] for i in order])


def test_relaxed_mp_structure_and_its_copies_are_known(tmp_path, db_uri):
    from pymatgen.core import Lattice, Structure

    from flywheel.makers.common import campaign_db
    from flywheel.makers.hull.novelty import judge_new_materials
    from flywheel.makers.relax import run
    from flywheel.makers.seeds.references import store_references

    config = _config(tmp_path, db_uri)
    db = campaign_db(config)
    counts = store_references(db, config)
    assert counts["references"] == counts["with_structure"] == 375
    ref = db.references.find_one(db.q(entry_id="mp-757614"))
    assert ref["formula"] == "LiFeO2" and ref["structure"]["sites"]
    assert ref["source_e_above_hull"] == pytest.approx(0.0, abs=1e-9)

    # mp-757614 (LiFeO2, Pmmn, 16 sites) relaxed by the oracle (CHGNet) ...
    relaxed = run.run_oracle([_mp("mp-757614").structure], config.oracle)[0]
    assert relaxed.ok
    _store(db, "r1-sub-00000", relaxed.structure, -6.9, "substitution")
    # ... a rotated 1x2x1 supercell of it and a copy with its sites shuffled ...
    _store(db, "r1-sub-00001", _rotated_supercell(relaxed.structure), -6.9,
           "substitution")
    _store(db, "r1-sub-00002", _shuffled(relaxed.structure), -6.9, "saps")
    # ... and zincblende FeO, which no MP FeO polymorph is.
    zb = Structure.from_spacegroup("F-43m", Lattice.cubic(4.6), ["Fe", "O"],
                                   [[0, 0, 0], [0.25, 0.25, 0.25]])
    _store(db, "r1-pro-00000", zb, -7.0, "prototype")

    counts = judge_new_materials(db)
    assert counts == {"known": 3, "new": 1}
    found = {d["material_id"]: (d["novelty"], d["known_id"])
             for d in db.materials.find(db.q())}
    assert found == {
        "r1-sub-00000": ("known", "mp-757614"),
        "r1-sub-00001": ("known", "mp-757614"),
        "r1-sub-00002": ("known", "mp-757614"),
        "r1-pro-00000": ("new", None),
    }
    # A second copy of the new structure in a later round is a duplicate of it.
    _store(db, "r2-sub-00000", _shuffled(zb, seed=3), -7.0, "substitution", 2)
    assert judge_new_materials(db) == {"duplicate": 1}
    dup = db.materials.find_one(db.q(material_id="r2-sub-00000"))
    assert (dup["novelty"], dup["known_id"]) == ("duplicate", "r1-pro-00000")
    assert judge_new_materials(db) == {}  # verdicts are stored once


def test_a_known_structure_below_the_hull_is_never_a_discovery(tmp_path, db_uri):
    """The vasp oracle's hull takes MP's MP2020 energies directly (no recompute)."""
    from pymatgen.core import Lattice, Structure

    from flywheel.makers.common import campaign_db
    from flywheel.makers.hull.jobs import HullMaker
    from flywheel.makers.seeds.references import store_references

    config = _config(tmp_path, db_uri, oracle={"backend": "vasp"})
    assert not config.recomputes_references()
    db = campaign_db(config)
    store_references(db, config)
    ground = db.references.find_one(db.q(entry_id="mp-757614"))
    # A copy of mp-757614 0.3 eV/atom below MP's LiFeO2, and zincblende FeO 20 meV/atom
    # below MP's FeO: both on the hull, only the new one is a discovery.
    _store(db, "r1-sub-00000", _shuffled(_mp("mp-757614").structure),
           ground["energy_per_atom"] - 0.3, "substitution")
    feo = min(d["energy_per_atom"] for d in db.references.find(db.q(formula="FeO")))
    zb = Structure.from_spacegroup("F-43m", Lattice.cubic(4.6), ["Fe", "O"],
                                   [[0, 0, 0], [0.25, 0.25, 0.25]])
    _store(db, "r1-pro-00000", zb, feo - 0.02, "prototype")
    maker = HullMaker()
    out = maker.make.original(maker, config, 1)
    assert out.novelty == {"known": 1, "new": 1}
    assert out.new_discoveries == ["r1-pro-00000"]
    known = db.materials.find_one(db.q(material_id="r1-sub-00000"))
    assert known["stable"] and known["decomposition_energy"] < -0.2
    assert (known["novelty"], known["known_id"], known["discovery"]) == (
        "known", "mp-757614", False)
    new = db.materials.find_one(db.q(material_id="r1-pro-00000"))
    # 20 meV/atom below MP's FeO ground state; against the other compositions only
    # (GNoME's decomposition energy) it is 68 meV/atom below the hull.
    assert new["hull_margin"] == pytest.approx(-0.02, abs=1e-9)
    assert new["decomposition_energy"] == pytest.approx(-0.0684094, abs=1e-6)
    assert new["discovery"] and new["novelty"] == "new"


def test_generators_drop_candidates_that_match_a_reference(tmp_path, db_uri):
    from pymatgen.core import Lattice, Structure

    from flywheel.makers.common import campaign_db
    from flywheel.makers.generate.admit import admit_candidates
    from flywheel.makers.generate.core import Candidate
    from flywheel.makers.seeds.references import store_references

    config = _config(tmp_path, db_uri)
    db = campaign_db(config)
    store_references(db, config)
    zb = Structure.from_spacegroup("F-43m", Lattice.cubic(4.6), ["Fe", "O"],
                                   [[0, 0, 0], [0.25, 0.25, 0.25]])
    cands = [Candidate(_rotated_supercell(_mp("mp-19419").structure)),  # R-3m LiFeO2
             Candidate(zb, generator="prototype")]
    out = admit_candidates(db, 1, cands, max_sites=16)
    assert out.unique == 1 and out.duplicates == 1
    assert db.candidates.find_one(db.q())["formula"] == "FeO"
