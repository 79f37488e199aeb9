"""A whole (tiny) campaign through FireWorks workers on the real local server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel.launchers.cli import main as cli

TINY = {
    "name": "tiny",
    "chemistry": {"elements": ["Li", "Na", "Cl"], "max_elements": 2, "max_sites": 8},
    "seeds": {"max_seeds": 6},
    "generate": {"substitution": {"budget": 12}},
    "filter": {
        "ensemble_size": 2,
        "budget": 3,
        "model": {"num_channels": 8, "max_num_epochs": 4, "r_max": 4.0},
    },
    "oracle": {"fmax": 0.2, "steps": 40, "chunk_size": 2, "max_frames": 4},
    "rounds": {"max_rounds": 1},
    "potential": {"num_channels": 8, "max_L": 0, "r_max": 4.0, "max_num_epochs": 3,
                  "test_fraction": 0.2},
}

BIN = Path(sys.executable).parent


def _write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_tiny_campaign_end_to_end(tmp_path, db_uri, capsys):
    from flywheel.db.stores import get_database

    path = _write(tmp_path, {**TINY, "database": {"uri": db_uri}})
    rc = cli(["run", str(path), "--dir", str(tmp_path / "camp"), "--no-progress",
              "--timeout", "900"])
    out = capsys.readouterr().out
    assert rc == 0, out
    db = get_database(db_uri)

    # both rounds closed, with their metrics
    rounds = list(db.rounds.find({"campaign": "tiny"}).sort("round", 1))
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[-1]["stopped"] and "max_rounds" in rounds[-1]["stop_reason"]
    r0, r1 = rounds
    assert r0["evaluated"] == db.materials.count_documents({"round": 0}) > 0
    assert r1["selected"] <= 3
    # the pool the filter chose from: every candidate it scored (none unselected yet
    # in round 1, so the round's scorable unique candidates)
    assert r0["pool"] is None
    assert r1["pool"] == db.candidates.count_documents(
        {"round": 1, "prediction": {"$exists": True}}) > 0
    assert r1["evaluated"] + r1["failed"] == r1["selected"]
    assert r1["evaluated"] > 0
    assert r1["filter_mae"] is not None
    # calibration of the filter on the round's oracle results, stored with the round
    assert r1["calibration"]["mae"] == pytest.approx(r1["filter_mae"])
    assert 0.0 <= r1["calibration"]["coverage_95"] <= 1.0
    # elemental references are on the hull of their own systems
    stable = {m["formula"] for m in db.materials.find({"stable": True})}
    assert {"Li", "Na", "Cl2"} <= stable
    # every oracle result is unique and has hull data
    ids = [m["material_id"] for m in db.materials.find({}, {"material_id": 1})]
    assert len(ids) == len(set(ids))
    assert db.materials.count_documents({"e_above_hull": None}) == 0
    # models of both rounds in GridFS, frames for every material with frames
    assert db["models.files"].count_documents({"metadata.round": 0}) == 2
    assert db["models.files"].count_documents({"metadata.round": 1}) == 2
    # each round's training time per epoch, from MACE's log (both members in workers)
    for r in rounds:
        assert 0 < r["train_seconds_per_epoch"] < r["train_seconds"]
    # the per-round table was printed
    assert "hit rate" in out and "entries on the hull" in out
    assert "base rate" in out and "enrichment" in out

    # the report: one page, its plots, readable in a headless browser
    report = tmp_path / "camp" / "report"
    assert f"report: {report / 'index.html'}" in out
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert {"hit_rate.png", "parity.png", "scaling.png"} <= set(pngs)
    assert {"hull_Cl-Li.png", "hull_Cl-Na.png"} & set(pngs)  # binaries only here
    _check_in_chromium(report / "index.html", len(pngs), "tiny", tmp_path)

    # every job ran exactly once, and only on a worker of its category
    fws = list(db.fireworks.find({}, {"fw_id": 1, "state": 1, "spec._category": 1,
                                      "launches": 1, "name": 1}))
    assert fws and all(fw["state"] == "COMPLETED" for fw in fws)
    cats = {fw["spec"]["_category"] for fw in fws}
    assert cats == {"cpu", "gpu"}
    for fw in fws:
        assert len(fw["launches"]) == 1, fw["name"]
        launch = db.launches.find_one({"launch_id": fw["launches"][0]})
        assert launch["fworker"]["category"] == fw["spec"]["_category"], fw["name"]
    gpu_names = {fw["name"].split()[-1] for fw in fws if fw["spec"]["_category"] == "gpu"}
    assert gpu_names == {"filter", "train"}, "|".join(sorted(fw["name"] for fw in fws))

    # stock FireWorks tools see the campaign
    lp_file = tmp_path / "camp" / "my_launchpad.yaml"
    res = subprocess.run([BIN / "lpad", "-l", lp_file, "get_wflows"],
                         capture_output=True, text=True, check=True)
    assert "tiny" in res.stdout
    res = subprocess.run([BIN / "lpad", "-l", lp_file, "get_fws", "-s", "COMPLETED",
                          "-d", "count"], capture_output=True, text=True, check=True)
    assert int(res.stdout.strip()) == len(fws)

    # the query command lists the hull entries from the server
    assert cli(["query", str(path), "--stable", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["formula"] for r in rows} == stable
    assert cli(["query", str(path), "--chemsys", "Li-Cl", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(set(r["chemsys"].split("-")) <= {"Li", "Cl"} for r in rows)
    assert cli(["status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert sum(r["count"] for r in status["fireworks"]) == len(fws)

    _potential_screens_and_conductivity(tmp_path, path, db, capsys)


def _potential_screens_and_conductivity(tmp_path, path, db, capsys):
    """Issue 12 on the finished tiny campaign: the potential leaves with a card and
    reproduces the stored predictions; screens store verdicts; the conductivity flow
    runs MD through FireWorks with that potential and does not repeat itself."""
    import numpy as np
    from mace.calculators import MACECalculator
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    pot = tmp_path / "potential"
    assert cli(["potential", "export", str(path), "-o", str(pot)]) == 0
    capsys.readouterr()
    card = json.loads((pot / "model_card.json").read_text())
    # the ensemble the round-1 filter used (trained after round 0)
    assert card["round"] == 0 and card["files"] == ["member0.model", "member1.model"]
    assert card["model"]["elements"] == ["Li", "Na", "Cl"]
    round1 = {m["material_id"] for m in db.materials.find({"round": 1})}
    assert card["held_out_materials"] == len(round1) > 0
    assert set(card["held_out_material_ids"]) == round1
    assert card["held_out"]["n_frames"] > 0
    assert card["held_out"]["energy_per_atom_mae"] >= 0
    assert card["learning_curve"][0]["round"] == 0
    assert card["learning_curve"][0]["n_frames"] == card["held_out"]["n_frames"]
    assert "Held-out errors" in (pot / "model_card.md").read_text()
    # MACECalculator with the exported files reproduces the stored predictions
    calc = MACECalculator(model_paths=[str(pot / f) for f in card["files"]],
                          device="cpu", default_dtype="float64")
    cands = list(db.candidates.find({"campaign": "tiny", "prediction.model_round": 0},
                                    {"structure": 1, "prediction": 1}).limit(5))
    assert cands
    for c in cands:
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(c["structure"]))
        atoms.calc = calc
        e = atoms.get_potential_energy() / len(atoms)
        assert e == pytest.approx(c["prediction"]["energy_per_atom"], abs=1e-5)
    # atomate2's force-field makers load it too
    from atomate2.forcefields.utils import ase_calculator

    assert ase_calculator("MACE", model=str(pot / "member0.model")) is not None

    # a final model trained with 20 % of the materials held out
    final = tmp_path / "final"
    assert cli(["potential", "export", str(path), "-o", str(final), "--train"]) == 0
    capsys.readouterr()
    card = json.loads((final / "model_card.json").read_text())
    n_mat = len({f["metadata"]["candidate_id"] for f in db["frames.files"].find()})
    assert card["held_out_materials"] + card["train_materials"] == n_mat
    assert card["held_out_materials"] == round(0.2 * n_mat)
    assert np.isfinite(card["held_out"]["energy_per_atom_mae"])
    assert (final / "potential.model").exists()

    # screens: verdicts stored on the materials and queryable
    assert cli(["screen", "layered", str(path), "--stable"]) == 0
    assert "pass" in capsys.readouterr().out
    n_stable = db.materials.count_documents({"campaign": "tiny", "stable": True})
    assert db.materials.count_documents(
        {"screens.layered.dimensionality_cheon": {"$exists": True}}) == n_stable
    assert cli(["screen", "li-conductor", str(path), "--stable", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["screened"] == n_stable
    assert cli(["query", str(path), "--li-conductor", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == summary["passed"]
    assert all("Li" in r["chemsys"].split("-") for r in rows)

    # conductivity: two short MD runs of a Li chloride with the exported potential
    li = db.materials.find_one({"campaign": "tiny", "chemsys": "Cl-Li"},
                               {"material_id": 1}, sort=[("nsites", 1)])
    args = ["conductivity", str(path), "--ids", li["material_id"], "--potential",
            str(pot / "member0.model"), "--temperatures", "600", "900",
            "--production-ps", "0.3", "--equilibration-ps", "0", "--min-length", "2",
            "--dir", str(tmp_path / "camp"), "--no-progress", "--timeout", "600"]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert li["material_id"] in out
    doc = db.conductivity.find_one({"material_id": li["material_id"]})
    assert [r["temperature"] for r in doc["per_temperature"]] == [600.0, 900.0]
    assert all(r["diffusivity"] >= 0 for r in doc["per_temperature"])
    assert doc["status"] in {"fit", "no diffusion", "one temperature"}
    md = list(db.fireworks.find({"name": {"$regex": "conductivity md"}},
                                {"spec._category": 1}))
    assert len(md) == 2 and {f["spec"]["_category"] for f in md} == {"gpu"}
    assert db["md.files"].count_documents({}) == 2
    # a second screen with the same settings runs no MD again
    assert cli(args) == 0
    capsys.readouterr()
    assert db.md_runs.count_documents({"material_id": li["material_id"]}) == 2
    assert db["md.files"].count_documents({}) == 2
    assert cli(["query", str(path), "--conductivity", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["material_id"] == li["material_id"]


def _chromium(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", *args], capture_output=True, text=True,
                          timeout=180)


def _check_in_chromium(page: Path, n_images: int, name: str, tmp_path: Path) -> None:
    """Render the report in headless Chromium: no broken image, the campaign's name
    shown, a screenshot that is not blank. .ci/run installs Debian's chromium and sets
    FLYWHEEL_REQUIRE_CHROMIUM, so CI cannot pass without this check."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        if os.environ.get("FLYWHEEL_REQUIRE_CHROMIUM"):
            pytest.fail("chromium is required (FLYWHEEL_REQUIRE_CHROMIUM) but missing")
        return
    import matplotlib.image as mpimg

    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    assert f'data-images="{n_images}"' in dom and 'data-broken="0"' in dom, dom[:400]
    assert f"flywheel campaign {name}" in dom
    shot = tmp_path / "report.png"
    _chromium("--window-size=1200,2400", f"--screenshot={shot}", page.as_uri())
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    assert (pixels < 0.9).any(axis=-1).mean() > 0.02  # ink on more than 2 % of it
    assert pixels.std() > 0.1
    # the check itself: a page whose image is missing is caught
    broken = page.parent / "broken.html"
    text = page.read_text()
    first = text.index("<img src='") + len("<img src='")
    broken.write_text(text[:first] + "missing_" + text[first:])
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", broken.as_uri()).stdout
    assert 'data-broken="1"' in dom
    broken.unlink()


def test_export_is_accepted_by_stock_lpad_add(tmp_path, db_uri):
    from flywheel.db.stores import get_database, make_launchpad

    path = _write(tmp_path, {**TINY, "database": {"uri": db_uri}})
    wf_file = tmp_path / "wf.yaml"
    assert cli(["export", str(path), "-o", str(wf_file)]) == 0
    assert cli(["init", str(tmp_path / "fw"), "--uri", db_uri]) == 0
    make_launchpad(db_uri).reset("", require_password=False)
    subprocess.run([BIN / "lpad", "-l", tmp_path / "fw" / "my_launchpad.yaml", "add",
                    wf_file], check=True, capture_output=True)
    fws = list(get_database(db_uri).fireworks.find({}, {"spec._category": 1, "name": 1,
                                                         "state": 1}))
    # round 0: seeds, oracle (adds the relax chunks when it runs), hull, train, close
    assert len(fws) == 5
    by_stage = {fw["name"].split()[-1] if "relax" not in fw["name"] else "relax":
                fw["spec"]["_category"] for fw in fws}
    assert by_stage == {"seeds": "cpu", "oracle": "cpu", "hull": "cpu", "train": "gpu",
                        "close": "cpu"}
    assert sum(fw["state"] == "READY" for fw in fws) == 1


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"filter": {"ensmble_size": 3}}, "unknown field 'filter.ensmble_size'"),
        ({"chemistry": {"elements": ["Li", "Qq"]}}, "unknown element symbol(s): Qq"),
        ({"seeds": {"files": ["missing.cif"]}}, "field 'seeds.files': not found"),
        ({"database": {"uri": "mongodb://127.0.0.1:9/x"}}, "mongodb://127.0.0.1:9/x"),
    ],
)
def test_bad_input_is_one_clear_message_and_nothing_is_submitted(
    tmp_path, db_uri, capsys, patch, message
):
    from flywheel.db.stores import get_database

    data = {**TINY, "database": {"uri": db_uri}, **patch}
    path = _write(tmp_path, data)
    assert cli(["submit", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert get_database(db_uri).fireworks.count_documents({}) == 0


def test_unreadable_seed_file_is_rejected_before_submission(tmp_path, db_uri, capsys):
    from flywheel.db.stores import get_database

    (tmp_path / "bad.cif").write_text("data_x\n_cell_length_a 3\nthis is not a cif\n")
    path = _write(tmp_path, {**TINY, "database": {"uri": db_uri},
                             "seeds": {"files": ["bad.cif"]}})
    assert cli(["submit", str(path)]) == 1
    err = capsys.readouterr().err
    assert "seeds.files" in err and "bad.cif" in err
    assert get_database(db_uri).fireworks.count_documents({}) == 0


def test_unreachable_database_says_how_to_start_the_server(capsys):
    assert cli(["query", "--uri", "mongodb://127.0.0.1:9/x", "--stable"]) == 1
    err = capsys.readouterr().err
    assert "mongodb://127.0.0.1:9/x" in err
    assert "flywheel db start" in err


def test_cli_subprocess_exit_codes(tmp_path):
    path = _write(tmp_path, {**TINY, "chemistry": {"elements": ["Li", "Qq"]}})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([BIN / "flywheel", "submit", path], capture_output=True,
                         text=True, env=env)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0, res.stderr
