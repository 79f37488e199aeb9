"""The FireWorks and jobflow files a campaign needs, written from one database URI.

``flywheel init`` writes them for a user to adapt; ``flywheel run`` writes the same
files into the campaign directory and points its local workers at them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from flywheel.db.stores import jobstore_spec
from flywheel.db.uri import split_uri, with_database

EXAMPLE_CAMPAIGN = """\
# flywheel campaign: every field is documented in docs/configuration.md.
name: {name}
chemistry:
  elements: [Li, Fe, O]     # the chemical space
  max_elements: 3           # at most this many elements per candidate
  max_sites: 16             # at most this many sites per cell
seeds:
  builtin: true             # elemental references + decorated binary prototypes
  files: []                 # CIF / POSCAR / extxyz / ComputedStructureEntry JSON
  max_seeds: 12             # relaxed in round 0
generate:
  substitution: {{enabled: true, budget: 60, threshold: 0.001}}
filter:
  ensemble_size: 2          # MACE models
  budget: 6                 # oracle relaxations per round
  stability_threshold: 0.05 # eV/atom above hull counted as a 'stable' call
  model: {{num_channels: 16, max_L: 0, r_max: 4.5, max_num_epochs: 25}}
oracle:
  backend: chgnet           # atomate2 ForceFieldRelaxMaker + CHGNet (offline)
  fmax: 0.1
  steps: 150
  chunk_size: 3
hull:
  on_hull_tolerance: 5.0e-5
rounds:
  max_rounds: 2
database:
  uri: {uri}
"""


def launchpad_dict(uri: str) -> dict[str, Any]:
    """``my_launchpad.yaml`` for ``uri``."""
    uri, name = split_uri(uri)
    return {"host": with_database(uri, name), "name": name, "uri_mode": True,
            "logdir": None, "strm_lvl": "INFO"}


def fworker_dict(category: str, name: str | None = None) -> dict[str, Any]:
    """An fworker that pulls only fireworks of ``category`` (``cpu`` or ``gpu``)."""
    return {"name": name or f"flywheel-{category}", "category": category, "query": "{}",
            "env": {}}


def qadapter_dict(
    category: str,
    *,
    campaign_dir: Path,
    venv: str | None = None,
    partition: str | None = None,
    walltime: str = "02:00:00",
    gpus: int = 1,
    cpus_per_task: int = 1,
) -> dict[str, Any]:
    """A SLURM CommonAdapter for the partition serving ``category``."""
    venv = venv or sys.prefix
    d = campaign_dir.resolve()
    env = (
        # SLURM's own record of where the job ran, in the job's log.
        'echo "SLURM_JOB_ID=$SLURM_JOB_ID SLURM_JOB_PARTITION=$SLURM_JOB_PARTITION"; '
        f"source {venv}/bin/activate; "
        f"export JOBFLOW_CONFIG_FILE={d}/jobflow.yaml FW_CONFIG_FILE={d}/FW_config.yaml "
        f"OMP_NUM_THREADS={cpus_per_task}"
    )
    q: dict[str, Any] = {
        "_fw_name": "CommonAdapter",
        "_fw_q_type": "SLURM",
        "rocket_launch": (
            f"rlaunch -l {d}/my_launchpad.yaml -w {d}/my_fworker_{category}.yaml "
            "singleshot"
        ),
        "nodes": 1,
        "ntasks": 1,
        "cpus_per_task": cpus_per_task,
        "walltime": walltime,
        "queue": partition or category,
        "job_name": f"flywheel-{category}",
        "pre_rocket": env,
        "post_rocket": None,
        "logdir": str(d / "qlogs"),
    }
    if category == "gpu":
        # FireWorks' stock SLURM template turns this into `#SBATCH --gres=gpu:N`.
        q["gres"] = f"gpu:{gpus}"
    return q


def fw_config_dict() -> dict[str, Any]:
    """FireWorks settings: rockets ping often enough for lost runs to be found in
    minutes rather than FireWorks' default of hours.
    """
    from flywheel.launchers.recover import PING_TIME_SECS

    return {"PING_TIME_SECS": PING_TIME_SECS}


def jobflow_dict(uri: str) -> dict[str, Any]:
    """A jobflow config whose JobStore lives in the campaign database."""
    return {"JOB_STORE": jobstore_spec(uri)}


def _dump(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_fw_files(
    directory: Path,
    uri: str,
    *,
    venv: str | None = None,
    partitions: dict[str, str] | None = None,
    gpus: int = 1,
    walltime: str = "02:00:00",
) -> dict[str, Path]:
    """Write launchpad, FireWorks config, both fworkers, both SLURM qadapters and the
    jobflow config into ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "qlogs").mkdir(exist_ok=True)
    files = {
        "launchpad": _dump(directory / "my_launchpad.yaml", launchpad_dict(uri)),
        "fw_config": _dump(directory / "FW_config.yaml", fw_config_dict()),
        "jobflow": _dump(directory / "jobflow.yaml", jobflow_dict(uri)),
    }
    for cat in ("cpu", "gpu"):
        files[f"fworker_{cat}"] = _dump(
            directory / f"my_fworker_{cat}.yaml", fworker_dict(cat)
        )
        files[f"qadapter_{cat}"] = _dump(
            directory / f"my_qadapter_{cat}.yaml",
            qadapter_dict(cat, campaign_dir=directory, venv=venv,
                          partition=(partitions or {}).get(cat), gpus=gpus,
                          walltime=walltime),
        )
    return files


def write_example_campaign(path: Path, name: str, uri: str) -> Path:
    """The example campaign YAML (a small Li-Fe-O campaign)."""
    path.write_text(EXAMPLE_CAMPAIGN.format(name=name, uri=uri))
    return path
