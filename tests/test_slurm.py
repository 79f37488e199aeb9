"""A campaign on a real single-node SLURM with stock `lpad add` and `qlaunch`.

`.ci/run` installs Debian's slurm packages and starts slurmctld/slurmd with
`.ci/setup_slurm.sh` (partitions `cpu` and `gpu`, one fake GPU); without a running
SLURM this module is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent


def _slurm_partitions() -> set[str]:
    if shutil.which("sinfo") is None:
        return set()
    res = subprocess.run(["sinfo", "-h", "-o", "%R %T"], capture_output=True, text=True)
    if res.returncode != 0:
        return set()
    return {line.split()[0] for line in res.stdout.splitlines()
            if re.search(r"idle|mix|alloc", line)}


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not {"cpu", "gpu"} <= _slurm_partitions(),
                       reason="no SLURM with cpu and gpu partitions (.ci/run starts one)"),
]

CAMPAIGN = {
    "name": "slurm",
    "chemistry": {"elements": ["Li", "Na", "Cl"], "max_elements": 2, "max_sites": 8},
    "seeds": {"max_seeds": 5},
    "generate": {"substitution": {"budget": 10}},
    "filter": {"ensemble_size": 2, "budget": 2,
               "model": {"num_channels": 8, "max_num_epochs": 3, "r_max": 4.0}},
    "oracle": {"fmax": 0.2, "steps": 40, "chunk_size": 3, "max_frames": 4},
    "rounds": {"max_rounds": 1},
}


def test_campaign_through_qlaunch_on_cpu_and_gpu_partitions(tmp_path, db_uri):
    from flywheel.db.stores import get_database, make_launchpad
    from flywheel.launchers.cli import main as cli

    camp = tmp_path / "campaign.yaml"
    camp.write_text(yaml.safe_dump({**CAMPAIGN, "database": {"uri": db_uri}}))
    assert cli(["init", str(tmp_path), "--uri", db_uri]) == 0
    assert cli(["export", str(camp), "-o", str(tmp_path / "wf.yaml")]) == 0
    make_launchpad(db_uri).reset("", require_password=False)
    lp_file = tmp_path / "my_launchpad.yaml"
    subprocess.run([BIN / "lpad", "-l", lp_file, "add", tmp_path / "wf.yaml"],
                   check=True, capture_output=True)

    launchers = []
    for cat in ("cpu", "gpu"):
        d = tmp_path / f"q_{cat}"
        d.mkdir()
        launchers.append(subprocess.Popen(
            [BIN / "qlaunch", "-l", lp_file, "-w", tmp_path / f"my_fworker_{cat}.yaml",
             "-q", tmp_path / f"my_qadapter_{cat}.yaml", "rapidfire",
             "--nlaunches", "infinite", "--sleep", "2", "-m", "2"],
            cwd=d, stdout=(d / "qlaunch.log").open("wb"), stderr=subprocess.STDOUT,
        ))
    db = get_database(db_uri)
    try:
        deadline = time.monotonic() + 1200
        while True:
            states = [fw["state"] for fw in db.fireworks.find({}, {"state": 1})]
            if states and all(s == "COMPLETED" for s in states) and db.rounds.find_one(
                {"round": 1}
            ):
                break
            assert "FIZZLED" not in states, "a firework fizzled under SLURM"
            assert time.monotonic() < deadline, f"campaign not done: {states}"
            time.sleep(3)
    finally:
        for p in launchers:
            p.terminate()
            p.wait(30)

    # SLURM's own view, printed by every batch job into its log: which partition ran it
    partitions: dict[str, set[str]] = {}
    for fw in db.fireworks.find({}, {"name": 1, "launches": 1}):
        launch = db.launches.find_one({"launch_id": fw["launches"][-1]})
        logs = list(Path(launch["launch_dir"]).glob("flywheel-*.out"))
        assert logs, f"no SLURM job log for {fw['name']}"
        found = re.findall(r"SLURM_JOB_PARTITION=(\w+)", logs[0].read_text())
        stage = fw["name"].split()[2]
        partitions.setdefault(stage, set()).update(found)
    assert partitions["filter"] == {"gpu"}
    assert partitions["train"] == {"gpu"}
    assert partitions["relax"] == {"cpu"}
    assert partitions["hull"] == partitions["seeds"] == {"cpu"}
    rounds = list(db.rounds.find({}).sort("round", 1))
    assert [r["round"] for r in rounds] == [0, 1]
