"""Reference entries (``hull.references``) loaded once into the campaign and used by
the hull job."""

from __future__ import annotations

import uuid

import pytest
import yaml

from flywheel.config import ConfigError, load_campaign


def _campaign(tmp_path, db_uri, **hull):
    data = {
        "name": f"ref{uuid.uuid4().hex[:6]}",
        "chemistry": {"elements": ["Li", "Fe", "O"], "max_sites": 8},
        "hull": hull,
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
    from flywheel.makers.seeds.jobs import store_references

    src = shared_data / "mp_Li-Fe-O_entries.json.gz"
    config = load_campaign(_campaign(tmp_path, db_uri, references=[str(src)]))
    db = campaign_db(config)
    counts = store_references(db, config)
    assert counts == {"references": 375, "references_rejected": 0}
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
