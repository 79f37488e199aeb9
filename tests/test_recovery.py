"""Faults: killed workers, a fizzled oracle job, a database restart mid-campaign."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flywheel.config import campaign_from_dict
from tests.conftest import free_port

BIN = Path(sys.executable).parent

ROUND0 = {
    "name": "faults",
    "chemistry": {"elements": ["Li", "Na", "Cl"], "max_elements": 2, "max_sites": 8},
    "seeds": {"max_seeds": 6},
    "filter": {"ensemble_size": 2, "model": {"num_channels": 8, "max_num_epochs": 3,
                                              "r_max": 4.0}},
    # tight convergence: each relaxation takes long enough to be killed in the middle
    "oracle": {"fmax": 0.002, "steps": 400, "chunk_size": 6, "max_frames": 4},
    "rounds": {"max_rounds": 0},
}


def _config(uri: str, **patch):
    return campaign_from_dict({**ROUND0, **patch, "database": {"uri": uri}})


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _materials(db) -> dict[str, object]:
    return {m["material_id"]: m["_id"] for m in db.materials.find({}, {"material_id": 1})}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_worker_round_completes_without_duplicates(tmp_path, db_uri, sig):
    from flywheel.db.stores import get_database, make_jobstore
    from flywheel.launchers.fwfiles import write_fw_files
    from flywheel.launchers.local import LocalWorkers, run_local, submit

    config = _config(db_uri)
    write_fw_files(tmp_path, db_uri)
    submit(config)
    db = get_database(db_uri)
    workers = LocalWorkers(tmp_path)
    workers.start(("cpu",))
    # the seeds job, then the single oracle chunk: kill after its first result
    _wait(lambda: db.materials.count_documents({}) >= 1, 300, "a first oracle result")
    os.kill(workers.procs["cpu"].pid, sig)
    workers.procs["cpu"].wait(30)
    before = _materials(db)
    assert 1 <= len(before) < 6, "the kill must land mid-chunk"
    running = db.fireworks.count_documents({"state": "RUNNING"})
    assert running == 1  # the killed chunk is left RUNNING: a lost run

    run_local(config, tmp_path, progress=False, timeout=600)  # resumes and recovers

    after = _materials(db)
    selected = [c["candidate_id"] for c in db.candidates.find({}, {"candidate_id": 1})]
    assert sorted(after) == sorted(selected)  # exactly one result per candidate
    assert all(after[k] == v for k, v in before.items())  # nothing completed was lost
    store = make_jobstore(db_uri)
    store.connect()
    relax = [d["output"] for d in store.query({"name": {"$regex": "relax"}})]
    assert sorted(sum((r["skipped"] for r in relax), [])) == sorted(before)
    r0 = db.rounds.find_one({"round": 0})
    assert r0["evaluated"] == 6 and r0["failed"] == 0


@pytest.mark.slow
def test_fizzled_oracle_job_is_recorded_and_round_finishes(tmp_path, db_uri):
    from flywheel.db.stores import get_database, make_launchpad
    from flywheel.launchers.fwfiles import write_fw_files
    from flywheel.launchers.local import run_local, submit

    config = _config(db_uri, oracle={"fmax": 0.2, "steps": 40, "chunk_size": 3,
                                     "max_frames": 4})
    write_fw_files(tmp_path, db_uri)
    submit(config)
    env = {**os.environ, "JOBFLOW_CONFIG_FILE": str(tmp_path / "jobflow.yaml")}
    # run only the seeds job, then break one candidate so its oracle chunk fizzles
    subprocess.run([BIN / "rlaunch", "-l", tmp_path / "my_launchpad.yaml", "-w",
                    tmp_path / "my_fworker_cpu.yaml", "singleshot"], cwd=tmp_path,
                   env=env, check=True, capture_output=True)
    db = get_database(db_uri)
    # the last candidate is a binary prototype (elemental references come first, and a
    # hull without them could not be built)
    last = db.candidates.find_one({}, sort=[("candidate_id", -1)])
    db.candidates.update_one({"_id": last["_id"]}, {"$set": {"structure": {}}})

    run_local(config, tmp_path, progress=False, timeout=600)

    lp = make_launchpad(db_uri)
    fizzled = lp.get_fw_ids({"state": "FIZZLED"})
    assert len(fizzled) == 1 and "relax 2/2" in lp.get_fw_by_id(fizzled[0]).name
    r0 = db.rounds.find_one({"round": 0})
    assert r0["selected"] == 6 and r0["failed"] == 3 and r0["evaluated"] == 3
    failed = list(db.candidates.find({"status": "failed"}))
    assert {c["failure"] for c in failed} == {"oracle job did not complete"}
    assert db.materials.count_documents({"e_above_hull": {"$ne": None}}) == 3
    assert db["models.files"].count_documents({"metadata.round": 0}) == 2


@pytest.mark.slow
def test_database_restart_mid_campaign(tmp_path):
    from flywheel.db.server import LocalServer
    from flywheel.db.stores import get_database
    from flywheel.launchers.local import run_local

    srv = LocalServer(data_dir=tmp_path / "db", port=free_port())
    srv.start()
    uri = f"{srv.uri}/restart"
    config = _config(uri, oracle={"fmax": 0.01, "steps": 300, "chunk_size": 2,
                                  "max_frames": 4})
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = run_local(config, tmp_path / "camp", progress=False,
                                          timeout=600)
        except BaseException as err:
            result["error"] = err

    thread = threading.Thread(target=run)
    try:
        thread.start()
        _wait(lambda: get_database(uri).materials.count_documents({}) >= 1, 300,
              "a first oracle result")
        srv.stop()
        time.sleep(3)
        srv.start()
        thread.join(600)
        assert "error" not in result, result.get("error")
        db = get_database(uri)
        assert db.rounds.find_one({"round": 0})["evaluated"] == 6
        ids = [m["material_id"] for m in db.materials.find({}, {"material_id": 1})]
        assert len(ids) == len(set(ids)) == 6
    finally:
        srv.stop()
