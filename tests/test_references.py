"""Reference entries (``hull.references``) loaded once into the campaign and used by
the hull job."""

from __future__ import annotations

import uuid

import pytest
import yaml

from flywheel.config import ConfigError, load_campaign


def _campaign(tmp_path, db_uri, oracle="chgnet", seeds=None, **hull):
    data = {
        "name": f"ref{uuid.uuid4().hex[:6]}",
        "chemistry": {"elements": ["Li", "Fe", "O"], "max_sites": 8},
        "seeds": seeds or {},
        "hull": hull,
        "oracle": {"backend": oracle},
        "database": {"uri": db_uri},
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_missing_reference_path_names_the_field(tmp_path, db_uri):
    path = _campaign(tmp_path, db_uri, references=["nowhere.json.gz"])
    with pytest.raises(ConfigError, match=r"field 'hull.references': not found: .*nowhere"):
        load_campaign(path)


def test_references_shape_the_hull(tmp_path, db_uri, shared_data):
    from monty.serialization import loadfn
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    from flywheel.makers.common import campaign_db
    from flywheel.makers.hull.jobs import HullMaker
    from flywheel.makers.seeds.references import store_references

    src = shared_data / "mp_Li-Fe-O_entries.json.gz"
    # The vasp oracle computes on MP's (MP2020) scale: references join the hull.
    config = load_campaign(_campaign(tmp_path, db_uri, references=[str(src)],
                                     oracle="vasp"))
    db = campaign_db(config)
    counts = store_references(db, config)
    assert counts == {"references": 375, "references_rejected": 0,
                      "with_structure": 375}
    # Loading again (a rerun of round 0) upserts: still 375 documents.
    store_references(db, config)
    assert db.references.count_documents(db.q()) == 375

    # A campaign result 0.1 eV/atom above MP's LiFeO2 ground state.
    mp = loadfn(src)
    pd = PhaseDiagram(mp)
    lifeo2 = min((e for e in mp if e.composition.reduced_formula == "LiFeO2"),
                 key=lambda e: e.energy_per_atom)
    assert pd.get_e_above_hull(lifeo2) == pytest.approx(0.0, abs=1e-8)
    db.materials.insert_one({
        "campaign": db.campaign, "material_id": "m1", "formula": "LiFeO2",
        "chemsys": "Fe-Li-O", "round": 1, "generator": "substitution",
        "energy_per_atom": lifeo2.energy_per_atom + 0.1,
    })
    maker = HullMaker()
    out = maker.make.original(maker, config, 1)
    doc = db.materials.find_one(db.q(material_id="m1"))
    assert doc["e_above_hull"] == pytest.approx(0.1, abs=1e-9)
    assert doc["stable"] is False
    assert out.new_discoveries == []
    # References are not campaign results: only the material got hull fields.
    assert db.references.count_documents(db.q(e_above_hull={"$exists": True})) == 0


def test_a_mixed_hull_is_refused(tmp_path, db_uri, shared_data):
    src = shared_data / "mp_Li-Fe-O_entries.json.gz"
    path = _campaign(tmp_path, db_uri, references=[str(src)],
                     recompute_references=False)
    with pytest.raises(ConfigError, match=r"hull.recompute_references is false, but "
                       r"the chgnet oracle .* mix levels of theory"):
        load_campaign(path)
    # vasp computes on the references' scale: allowed, and no recompute by default
    config = load_campaign(_campaign(tmp_path, db_uri, oracle="vasp",
                                     references=[str(src)]))
    assert not config.recomputes_references()
    assert load_campaign(_campaign(tmp_path, db_uri, references=[str(src)])
                         ).recomputes_references()


def test_recompute_selection_is_the_window_of_the_source_hull(tmp_path, db_uri,
                                                              shared_data):
    from flywheel.makers.common import campaign_db
    from flywheel.makers.hull.core import hull_entries
    from flywheel.makers.seeds.jobs import reference_candidates
    from flywheel.makers.seeds.references import store_references

    src = shared_data / "mp_Li-Fe-O_entries.json.gz"
    config = load_campaign(_campaign(tmp_path, db_uri, references=[str(src)],
                                     recompute_window=0.025))
    db = campaign_db(config)
    store_references(db, config)
    cands = reference_candidates(db, config)
    # 43 of MP's 375 Li-Fe-O entries lie within 25 meV/atom of its MP2020 hull, the
    # 11 stable phases among them (pymatgen's own Li-Fe-O test set has 11 too)
    assert len(cands) == 43
    on_hull = {d["entry_id"] for d in db.references.find(
        db.q(source_e_above_hull={"$lte": 1e-9}))}
    assert len(on_hull) == 11 and {"mp-13", "mp-1960", "mp-19770"} <= on_hull
    assert on_hull <= {c.reference_id for c in cands}
    assert all(c.generator == "reference" and c.is_reference for c in cands)
    # recomputed: the references' own energies stay out of the hull
    assert hull_entries(db, config) == []


def test_missing_elemental_reference_fails_before_submit(tmp_path, db_uri, capsys):
    from pymatgen.core import Lattice, Structure

    from flywheel.db.stores import get_database
    from flywheel.launchers.cli import main as cli

    # seeds without built-ins: only an Li metal file; no reference file
    Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]]
              ).to(filename=str(tmp_path / "Li.cif"))
    path = _campaign(tmp_path, db_uri, seeds={"builtin": False, "files": ["Li.cif"]})
    assert cli(["submit", str(path)]) == 1
    err = capsys.readouterr().err
    assert "no elemental reference for Fe, O" in err and "Traceback" not in err
    assert get_database(db_uri).fireworks.count_documents({}) == 0
