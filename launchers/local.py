"""Run a campaign on this machine through the same FireWorks + MongoDB path a cluster
uses: submit the workflow to the LaunchPad, then run one stock ``rlaunch rapidfire``
worker per category (``cpu`` and ``gpu``) until the workflow is finished."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flywheel.db.errors import DatabaseUnreachableError, check_reachable

if TYPE_CHECKING:
    from fireworks import LaunchPad

    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)

CATEGORIES = ("cpu", "gpu")
DONE_STATES = {"COMPLETED", "DEFUSED", "ARCHIVED"}


def is_loopback_uri(uri: str) -> bool:
    """Whether every host in ``uri`` is this machine."""
    if uri.startswith("mongodb+srv://"):
        return False
    hosts = urlsplit(uri).netloc.rsplit("@", 1)[-1].split(",")
    return all(h.split(":")[0] in {"127.0.0.1", "localhost", "::1", "[::1]"}
               for h in hosts)


def uri_port(uri: str) -> int:
    """Port of the first host in ``uri`` (27017 if absent)."""
    host = urlsplit(uri).netloc.rsplit("@", 1)[-1].split(",")[0]
    return int(host.rsplit(":", 1)[1]) if ":" in host else 27017


def ensure_database(uri: str, data_dir: Path, *, start_local: bool = True) -> bool:
    """Make sure ``uri`` answers; start the local server for a loopback URI.

    Returns whether this call started a server. Raises
    :class:`DatabaseUnreachableError` for an unreachable non-local URI.
    """
    try:
        check_reachable(uri, timeout_ms=1500)
        return False
    except DatabaseUnreachableError:
        if not (start_local and is_loopback_uri(uri)):
            raise
    from flywheel.db.server import LocalServer

    LocalServer(data_dir=data_dir, port=uri_port(uri)).start()
    check_reachable(uri)
    return True


def init_launchpad(lp: LaunchPad) -> None:
    """Initialise an empty LaunchPad (FireWorks needs its id counters); never resets
    a LaunchPad that already holds workflows."""
    if lp.fw_id_assigner.count_documents({}) == 0 and lp.workflows.count_documents(
        {}
    ) == 0:
        lp.reset("", require_password=False, max_reset_wo_password=int(1e9))


def submit(config: CampaignConfig) -> int:
    """Add the campaign workflow to the LaunchPad of ``config.database.uri``.

    Returns the workflow's first firework id.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    from flywheel.db.stores import make_launchpad
    from flywheel.makers.common import campaign_db
    from flywheel.workflows.campaign import CampaignMaker

    check_reachable(config.database.uri)
    campaign_db(config)  # indexes before the first write
    lp = make_launchpad(config.database.uri)
    init_launchpad(lp)
    wf = flow_to_workflow(CampaignMaker().make(config))
    mapping = lp.add_wf(wf)
    return min(mapping.values())


def workflow_summary(lp: LaunchPad, fw_id: int) -> dict[str, Any]:
    """States of the workflow containing ``fw_id``: state, counts and running names."""
    wf = lp.workflows.find_one({"nodes": fw_id}, {"nodes": 1, "state": 1})
    if wf is None:
        raise KeyError(f"no workflow contains firework {fw_id}")
    states: dict[str, int] = {}
    running = []
    for fw in lp.fireworks.find({"fw_id": {"$in": wf["nodes"]}},
                                {"state": 1, "name": 1}):
        states[fw["state"]] = states.get(fw["state"], 0) + 1
        if fw["state"] == "RUNNING":
            running.append(fw["name"])
    return {"state": wf["state"], "states": states, "total": len(wf["nodes"]),
            "running": sorted(running)}


@dataclass
class LocalWorkers:
    """One ``rlaunch rapidfire`` process per category, started in ``directory``."""

    directory: Path
    sleep: float = 1.0

    def start(self) -> None:
        env = dict(os.environ)
        env["JOBFLOW_CONFIG_FILE"] = str(self.directory / "jobflow.yaml")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.procs: dict[str, subprocess.Popen] = {}
        rlaunch = str(Path(sys.executable).with_name("rlaunch"))
        for cat in CATEGORIES:
            wdir = self.directory / "launches" / cat
            wdir.mkdir(parents=True, exist_ok=True)
            log = (self.directory / f"worker_{cat}.log").open("ab")
            self.procs[cat] = subprocess.Popen(
                [rlaunch, "-l", str(self.directory / "my_launchpad.yaml"),
                 "-w", str(self.directory / f"my_fworker_{cat}.yaml"),
                 "rapidfire", "--nlaunches", "infinite", "--sleep", str(max(1, round(self.sleep)))],
                cwd=wdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def check_alive(self) -> None:
        for cat, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the {cat} worker exited with code {proc.returncode}; "
                    f"see {self.directory / f'worker_{cat}.log'}"
                )

    def stop(self, timeout: float = 20) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_local(
    config: CampaignConfig,
    directory: Path,
    *,
    progress: bool = True,
    poll: float = 2.0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Submit ``config`` and run local cpu and gpu workers until the campaign ends.

    Returns the final workflow summary. Raises ``RuntimeError`` if a firework fizzles
    or a worker dies, ``TimeoutError`` after ``timeout`` seconds.
    """
    from flywheel.db.stores import make_launchpad
    from flywheel.launchers.fwfiles import write_fw_files
    from flywheel.settings import get_settings

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ensure_database(config.database.uri, directory / "db")
    write_fw_files(directory, config.database.uri)
    fw_id = submit(config)
    lp = make_launchpad(config.database.uri)
    workers = LocalWorkers(directory, sleep=get_settings().WORKER_SLEEP)
    workers.start()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=1, unit="job", desc=config.name, dynamic_ncols=True)
    start = time.monotonic()
    try:
        while True:
            summary = workflow_summary(lp, fw_id)
            done = sum(summary["states"].get(s, 0) for s in DONE_STATES)
            if bar is not None:
                bar.total = summary["total"]
                bar.n = done
                bar.set_postfix_str(", ".join(summary["running"])[:60])
                bar.refresh()
            if summary["states"].get("FIZZLED"):
                raise RuntimeError(
                    f"{summary['states']['FIZZLED']} job(s) fizzled; inspect with "
                    f"`lpad -l {directory / 'my_launchpad.yaml'} get_fws -s FIZZLED -d more`"
                )
            if done == summary["total"]:
                return summary
            workers.check_alive()
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"campaign not finished after {timeout:.0f} s")
            time.sleep(poll)
    finally:
        workers.stop()
        if bar is not None:
            bar.close()
