"""The r²SCAN re-check: selection, verdicts, and a real run with CHGNet's r²SCAN weights."""

from __future__ import annotations

import uuid

import pytest

from flywheel.config import campaign_from_dict
from flywheel.makers.recheck.core import select_recheck, subsystems, summarize_recheck


def _m(mid, chemsys, stable, discovery=False, decomp=None):
    return {"material_id": mid, "chemsys": chemsys, "stable": stable,
            "discovery": discovery, "decomposition_energy": decomp}


def test_subsystems():
    assert subsystems("O-Li-Fe") == {"Fe", "Li", "O", "Fe-Li", "Fe-O", "Li-O",
                                     "Fe-Li-O"}


def test_selection_takes_discoveries_and_their_competing_phases():
    mats = [
        _m("li", "Li", True), _m("o", "O", True), _m("fe", "Fe", True),
        _m("na", "Na", True),
        _m("li2o", "Li-O", True),                # competitor (subsystem)
        _m("li2o2", "Li-O", False),              # unstable: not needed
        _m("nao", "Na-O", True),                 # other system: not needed
        _m("d1", "Fe-Li-O", True, True, -0.02),
        _m("d2", "Li-O", True, True, -0.10),
        _m("d3", "Na-O", True, True, -0.01),
    ]
    disc, comp = select_recheck(mats, max_materials=2)
    assert disc == ["d2", "d1"]                  # most negative first, capped at 2
    assert comp == ["fe", "li", "li2o", "o"]
    disc, comp = select_recheck(mats, max_materials=10)
    assert disc == ["d2", "d1", "d3"]
    assert comp == ["fe", "li", "li2o", "na", "nao", "o"]
    assert select_recheck([_m("li", "Li", True)], 5) == ([], [])


def test_verdicts_on_a_constructed_hull():
    disc = [
        {"material_id": "ab", "formula": "AB", "chemsys": "Li-O", "nelements": 2,
         "decomposition_energy": -0.05},
        {"material_id": "ab2", "formula": "LiO2", "chemsys": "Li-O", "nelements": 2,
         "decomposition_energy": -0.01},
        {"material_id": "lost", "formula": "Li2O2", "chemsys": "Li-O", "nelements": 2,
         "decomposition_energy": -0.03},
    ]
    disc[0]["formula"] = "LiO"
    recomputed = [
        {"material_id": "li", "formula": "Li", "energy_per_atom": 0.0},
        {"material_id": "o", "formula": "O", "energy_per_atom": 0.0},
        # LiO at -1.0 survives; LiO2 at -0.5 lies above the LiO-O tie line (-2/3 at
        # x(O) = 2/3) by 1/6 eV/atom.
        {"material_id": "ab", "formula": "LiO", "energy_per_atom": -1.0},
        {"material_id": "ab2", "formula": "LiO2", "energy_per_atom": -0.5},
    ]
    out = summarize_recheck(disc, recomputed, tolerance=5e-5)
    assert out["n_selected"] == 3
    assert out["n_checked"] == 2
    assert out["n_survived"] == 1
    assert out["survival_rate"] == 0.5
    assert out["by_nelements"] == {"2": {"checked": 2, "survived": 1}}
    ab = out["materials"]["ab"]
    assert ab["survives"] is True
    # Phase-separation energy of LiO against the hull without it: Li + LiO2, whose
    # tie line lies at -0.5 * (1/2)/(2/3) = -0.375 at x(O) = 1/2.
    assert ab["decomposition_energy"] == pytest.approx(-1.0 + 0.375)
    assert out["materials"]["ab2"]["e_above_hull"] == pytest.approx(-0.5 + 2 / 3)
    assert out["materials"]["ab2"]["survives"] is False
    assert out["materials"]["lost"]["status"].startswith("not recomputed")


def _diamond(el, a):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]),
                     [el, el], [[0, 0, 0], [0.25, 0.25, 0.25]])


def _zincblende(a):
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]),
                     ["Si", "C"], [[0, 0, 0], [0.25, 0.25, 0.25]])


CAMPAIGN = {
    "chemistry": {"elements": ["Si", "C"], "max_sites": 4},
    "oracle": {"fmax": 0.05, "steps": 200},
}


def _sic_campaign(db_uri):
    """Si, C (diamond) and SiC (zinc blende) relaxed by the CHGNet oracle, hull built."""
    from monty.json import jsanitize

    from flywheel.makers.common import campaign_db, structure_fields
    from flywheel.makers.hull.jobs import HullMaker
    from flywheel.makers.relax import run

    config = campaign_from_dict({
        "name": f"rc{uuid.uuid4().hex[:6]}", **CAMPAIGN, "database": {"uri": db_uri},
    })
    db = campaign_db(config)
    starts = {"si": (_diamond("Si", 5.45), "seed"), "c": (_diamond("C", 3.6), "seed"),
              "sic": (_zincblende(4.4), "substitution")}
    results = run.run_oracle([s for s, _ in starts.values()], config.oracle)
    for (mid, (_, gen)), res in zip(starts.items(), results, strict=True):
        assert res.ok, res.error
        db.materials.insert_one({
            "campaign": db.campaign, "material_id": mid, "round": 1, "generator": gen,
            "structure": jsanitize(res.structure.as_dict()), "energy": res.energy,
            "energy_per_atom": res.energy / len(res.structure),
            **structure_fields(res.structure),
        })
    hull = HullMaker()
    hull.make.original(hull, config, 1)
    sic = db.materials.find_one(db.q(material_id="sic"))
    assert sic["discovery"] is True
    assert sic["decomposition_energy"] < -0.1     # SiC is strongly bound in GGA
    return config, db, sic["decomposition_energy"]


def test_recheck_flow_with_chgnet_r2scan(db_uri):
    """The re-check relaxes Si, C and SiC with CHGNet's r²SCAN weights and judges SiC."""
    from jobflow import run_locally

    from flywheel.workflows.recheck import recheck_flow

    config, db, gga_decomp = _sic_campaign(db_uri)

    run_locally(recheck_flow(config), log=False, ensure_success=True)
    hf = {d["material_id"]: d for d in db.fidelity.find(db.q(fidelity="r2scan"))}
    assert set(hf) == {"si", "c", "sic"}
    summary = db.rechecks.find_one(db.q(fidelity="r2scan"))
    assert summary["n_selected"] == 1 and summary["n_checked"] == 1
    verdict = db.materials.find_one(db.q(material_id="sic"))["r2scan"]
    assert verdict["status"] == "checked"
    assert verdict["decomposition_energy_before"] == pytest.approx(gga_decomp)
    # A different functional: energies move (r²SCAN total energies are far lower).
    for mid, d in hf.items():
        gga = db.materials.find_one(db.q(material_id=mid))["energy_per_atom"]
        assert abs(d["energy_per_atom"] - gga) > 0.5
    print(f"SiC phase separation: GGA {gga_decomp:.4f}, "
          f"r2SCAN {verdict['decomposition_energy']:.4f} eV/atom")
    assert verdict["survives"] is True
    assert verdict["decomposition_energy"] == pytest.approx(RECORDED_SIC_R2SCAN, abs=5e-3)

    # A second re-check recomputes nothing.
    before = {d["material_id"]: d["_id"] for d in db.fidelity.find(db.q())}
    run_locally(recheck_flow(config), log=False, ensure_success=True)
    assert {d["material_id"]: d["_id"] for d in db.fidelity.find(db.q())} == before


# Recorded from this test (CHGNet r2SCAN weights; the GGA weights gave -0.334).
RECORDED_SIC_R2SCAN = -0.382


def test_recheck_cli_runs_on_fireworks_workers(db_uri, tmp_path, capsys):
    """``flywheel recheck`` submits the flow and runs it with the local cpu/gpu
    FireWorks workers: every firework (the ones added at run time included) must be
    picked up by a categorised worker and complete exactly once.
    """
    import yaml

    from flywheel.db.stores import make_launchpad
    from flywheel.launchers.cli import main as cli

    config, db, _ = _sic_campaign(db_uri)
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(
        {"name": config.name, **CAMPAIGN, "database": {"uri": db_uri}}))
    assert cli(["recheck", str(path), "--dir", str(tmp_path / "run"), "--no-progress",
                "--timeout", "600"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 checked discoveries stay on the hull (100 %)" in out
    lp = make_launchpad(db_uri)
    fws = list(lp.fireworks.find({"spec.flywheel.campaign": config.name},
                                 {"fw_id": 1, "name": 1, "state": 1}))
    assert sorted(f["name"] for f in fws) == (
        ["recheck relax"] * 3 + ["recheck select", "recheck summary"])
    # The whole workflow (a job jobflow might add without a category included).
    wf = lp.workflows.find_one({"nodes": fws[0]["fw_id"]}, {"nodes": 1, "state": 1})
    assert wf["state"] == "COMPLETED"
    assert len(wf["nodes"]) == len(fws)
