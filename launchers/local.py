"""Run a campaign on this machine through the same FireWorks + MongoDB path a cluster
uses: submit the workflow to the LaunchPad, then run one stock ``rlaunch rapidfire``
worker per category (``cpu`` and ``gpu``) until the workflow is finished.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.db.errors import DatabaseUnreachableError, check_reachable
from flywheel.db.uri import is_loopback_uri, uri_host, uri_port

if TYPE_CHECKING:
    from fireworks import LaunchPad

    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)

CATEGORIES = ("cpu", "gpu")
DONE_STATES = {"COMPLETED", "DEFUSED", "ARCHIVED"}


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

    LocalServer(data_dir=data_dir, host=uri_host(uri), port=uri_port(uri)).start()
    check_reachable(uri)
    return True


def init_launchpad(lp: LaunchPad) -> None:
    """Initialise an empty LaunchPad (FireWorks needs its id counters); never resets
    a LaunchPad that already holds workflows.
    """
    if lp.fw_id_assigner.count_documents({}) == 0 and lp.workflows.count_documents(
        {}
    ) == 0:
        lp.reset("", require_password=False, max_reset_wo_password=int(1e9))


class CampaignExistsError(RuntimeError):
    """The campaign already has a workflow on this LaunchPad."""


def find_campaign_fw(lp: LaunchPad, name: str) -> int | None:
    """The first firework id of campaign ``name`` on the LaunchPad, or None."""
    from flywheel.db.tags import tag_query

    doc = lp.fireworks.find_one(tag_query(name), {"fw_id": 1}, sort=[("fw_id", 1)])
    return None if doc is None else int(doc["fw_id"])


def submit(config: CampaignConfig) -> int:
    """Add the campaign workflow to the LaunchPad of ``config.database.uri``.

    Returns the workflow's first firework id. Refuses a campaign name that is already on
    the LaunchPad (``flywheel run`` resumes it instead), so nothing is submitted twice.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    from flywheel.db.stores import make_launchpad
    from flywheel.makers.common import campaign_db
    from flywheel.workflows.campaign import CampaignMaker

    check_reachable(config.database.uri)
    lp = make_launchpad(config.database.uri)
    existing = find_campaign_fw(lp, config.name)
    if existing is not None:
        raise CampaignExistsError(
            f"campaign {config.name!r} is already on the LaunchPad at "
            f"{config.database.uri} (firework {existing}); `flywheel run` resumes it, "
            "or choose another name"
        )
    campaign_db(config)  # indexes before the first write
    init_launchpad(lp)
    wf = flow_to_workflow(CampaignMaker().make(config))
    mapping = lp.add_wf(wf)
    return min(mapping.values())


def find_stage_fw(lp: LaunchPad, name: str, stage: str) -> int | None:
    """The ``stage`` firework (``"recheck select"``, ``"conductivity select"``) of
    campaign ``name``'s newest unfinished workflow of that kind."""
    from flywheel.db.tags import tag_query

    doc = lp.fireworks.find_one(tag_query(name, stage=stage), {"fw_id": 1},
                                sort=[("fw_id", -1)])
    if doc is None:
        return None
    wf = lp.workflows.find_one({"nodes": doc["fw_id"]}, {"state": 1, "fw_states": 1})
    if wf is None or wf["state"] == "COMPLETED":
        return None
    # Finished with failures (nothing left to run): a new request starts afresh;
    # finished runs are not repeated (the jobs skip what is stored).
    left = {"READY", "WAITING", "RESERVED", "RUNNING", "PAUSED"}
    if not left & set((wf.get("fw_states") or {}).values()):
        return None
    return int(doc["fw_id"])


def submit_recheck(config: CampaignConfig) -> int:
    """Add an r²SCAN re-check workflow of campaign ``config`` to its LaunchPad.

    Materials already recomputed at r²SCAN (``fidelity`` collection) are not run again,
    so a re-check after more rounds only computes what is new.
    """
    from flywheel.workflows.recheck import recheck_flow

    return _add_flow(config, recheck_flow(config), f"{config.name} r2SCAN re-check")


def _add_flow(config: CampaignConfig, flow: Any, name: str) -> int:
    from jobflow import Flow
    from jobflow.managers.fireworks import flow_to_workflow

    from flywheel.db.stores import make_launchpad

    check_reachable(config.database.uri)
    lp = make_launchpad(config.database.uri)
    init_launchpad(lp)
    mapping = lp.add_wf(flow_to_workflow(Flow([flow], name=name)))
    return min(mapping.values())


def submit_conductivity(config: CampaignConfig, material_ids: list[str] | None = None,
                        selection: dict[str, Any] | None = None) -> int:
    """Add an MD conductivity screen of campaign ``config`` to its LaunchPad.

    Runs already stored with the same settings are not repeated.
    """
    from flywheel.workflows.conductivity import conductivity_flow

    return _add_flow(config, conductivity_flow(config, material_ids, selection),
                     f"{config.name} conductivity")


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
    sleep: int = 1

    def __post_init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts = 0

    def fworker_name(self, category: str) -> str:
        import yaml

        path = self.directory / f"my_fworker_{category}.yaml"
        return yaml.safe_load(path.read_text())["name"]

    def start(self, categories: tuple[str, ...] = CATEGORIES) -> None:
        env = dict(os.environ)
        env["JOBFLOW_CONFIG_FILE"] = str(self.directory / "jobflow.yaml")
        env["FW_CONFIG_FILE"] = str(self.directory / "FW_config.yaml")
        env.setdefault("OMP_NUM_THREADS", "1")
        rlaunch = str(Path(sys.executable).with_name("rlaunch"))
        for cat in categories:
            wdir = self.directory / "launches" / cat
            wdir.mkdir(parents=True, exist_ok=True)
            log = (self.directory / f"worker_{cat}.log").open("ab")
            self.procs[cat] = subprocess.Popen(
                [rlaunch, "-l", str(self.directory / "my_launchpad.yaml"),
                 "-w", str(self.directory / f"my_fworker_{cat}.yaml"),
                 "rapidfire", "--nlaunches", "infinite", "--sleep", str(self.sleep)],
                cwd=wdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def dead(self) -> list[str]:
        """Categories whose worker process has exited."""
        return [cat for cat, p in self.procs.items() if p.poll() is not None]

    def stop(self, timeout: float = 20) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for_database(uri: str, timeout: float) -> None:
    """Block until ``uri`` answers, up to ``timeout`` seconds (then raise)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check_reachable(uri, timeout_ms=2000)
            return
        except DatabaseUnreachableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


class Progress:
    """Progress of a local run on stderr: a tqdm bar on a terminal; in a log (stderr
    not a terminal) one line each time a job ends, not one per poll."""

    def __init__(self, name: str, stream: Any = None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.last: tuple[int, int] | None = None
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=1, unit="job", desc=name, dynamic_ncols=True,
                            file=self.stream)

    def update(self, done: int, total: int, running: list[str]) -> None:
        """Show ``done`` of ``total`` jobs finished, ``running`` the running ones."""
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(", ".join(running)[:60])
            self.bar.refresh()
            return
        if (done, total) == self.last:
            return
        self.last = (done, total)
        line = f"{self.name}: {done}/{total} jobs done"
        if running:
            line += f"; running: {', '.join(running)}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar (nothing to do for log lines)."""
        if self.bar is not None:
            self.bar.close()


def run_local(
    config: CampaignConfig,
    directory: Path,
    *,
    progress: bool = True,
    poll: float = 2.0,
    timeout: float | None = None,
    db_wait: float = 120.0,
    max_restarts: int = 10,
    rerun_fizzled: bool = False,
    workflow: str = "campaign",
    submit_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run campaign ``config`` with local cpu and gpu workers until it ends.

    Submits the campaign, or resumes it if it is already on the LaunchPad (lost runs of
    earlier local workers are rerun first). A worker that dies (killed, or the database
    went away) is restarted once the database answers again, after its RUNNING
    fireworks were rerun. A fizzled firework does not stop the campaign while other work
    can proceed (failed oracle chunks are recorded and the round goes on); the run ends
    with ``RuntimeError`` only when fizzled fireworks block everything left.
    ``workflow="recheck"`` runs (submitting if needed) the campaign's r²SCAN re-check,
    ``workflow="conductivity"`` its MD conductivity screen (``submit_args`` go to
    :func:`submit_conductivity`).

    Returns the final workflow summary.
    """
    from pymongo.errors import PyMongoError

    from flywheel.db.stores import make_launchpad
    from flywheel.launchers.fwfiles import write_fw_files
    from flywheel.launchers.recover import recover
    from flywheel.settings import get_settings

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ensure_database(config.database.uri, directory / "db")
    write_fw_files(directory, config.database.uri)
    lp = make_launchpad(config.database.uri)
    workers = LocalWorkers(directory, sleep=get_settings().WORKER_SLEEP)
    if workflow == "campaign":
        fw_id = find_campaign_fw(lp, config.name)
    else:
        fw_id = find_stage_fw(lp, config.name, f"{workflow} select")
    if fw_id is None:
        fw_id = (submit(config) if workflow == "campaign" else
                 submit_recheck(config) if workflow == "recheck" else
                 submit_conductivity(config, **(submit_args or {})))
    else:
        logger.warning("resuming %s of %s (firework %d)", workflow, config.name, fw_id)
        for cat in CATEGORIES:  # no local worker is alive now: their runs are lost
            recover(lp, campaign=config.name, expiration_secs=0,
                    fworker=workers.fworker_name(cat), fizzled=rerun_fizzled)
    workers.start()
    bar = Progress(config.name) if progress else None
    start = time.monotonic()
    stuck_polls = 0
    try:
        while True:
            try:
                summary = workflow_summary(lp, fw_id)
            except PyMongoError:
                logger.warning("database at %s not answering; waiting",
                               config.database.uri)
                wait_for_database(config.database.uri, db_wait)
                continue
            states = summary["states"]
            done = sum(states.get(s, 0) for s in DONE_STATES)
            if bar is not None:
                bar.update(done + states.get("FIZZLED", 0), summary["total"],
                           summary["running"])
            active = sum(states.get(s, 0) for s in ("READY", "RESERVED", "RUNNING"))
            if done + states.get("FIZZLED", 0) == summary["total"]:
                return summary
            stuck_polls = stuck_polls + 1 if active == 0 else 0
            if stuck_polls >= 3:
                raise RuntimeError(
                    f"{states.get('FIZZLED', 0)} job(s) fizzled and block the "
                    f"campaign; inspect with `lpad -l {directory / 'my_launchpad.yaml'} "
                    "get_fws -s FIZZLED -d more`, fix, then `flywheel recover "
                    "--fizzled` and `flywheel run` again"
                )
            for cat in workers.dead():
                workers.restarts += 1
                if workers.restarts > max_restarts:
                    raise RuntimeError(
                        f"the {cat} worker died {max_restarts} times; see "
                        f"{directory / f'worker_{cat}.log'}"
                    )
                logger.warning("%s worker exited; restarting it", cat)
                wait_for_database(config.database.uri, db_wait)
                recover(lp, campaign=config.name, expiration_secs=0,
                        fworker=workers.fworker_name(cat))
                workers.start((cat,))
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"campaign not finished after {timeout:.0f} s")
            time.sleep(poll)
    finally:
        workers.stop()
        if bar is not None:
            bar.close()
