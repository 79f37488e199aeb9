"""Pure (workflow-free) MACE training helpers.

These functions write labelled frames to extxyz and train MACE models by running
MACE's own trainer (``mace.cli.run_train``) in worker processes
(:mod:`flywheel.makers.train.worker`), each training one or more members in turn.
Running the trainer out of process keeps MACE's global side effects (torch default
dtype, logging handlers, seeding) out of the caller and gives one self-contained
log file per model.

Units follow ASE: energies in eV, forces in eV/Å, stresses in eV/Å^3 (ASE sign
convention, i.e. ``atoms.get_stress()``), lengths in Å.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: Keys MACE reads by default; we write exactly these so no ``--*_key`` flags
#: are needed (``energy``/``forces``/``stress`` clash with ASE calculator keys).
ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"
STRESS_KEY = "REF_stress"

#: ``atoms.info`` keys MACE honours besides the labels (weights, config types).
_PASSTHROUGH_INFO = re.compile(r"^(config_type|config_weight|config_\w+_weight)$")


@dataclass(frozen=True)
class MaceTrainSettings:
    """Hyper-parameters for one MACE training run.

    Attributes
    ----------
    num_channels : int
        Hidden feature channels per irrep (dimensionless).
    max_L : int
        Highest symmetry order of the hidden features (0 = invariant; fastest).
    max_ell : int
        Highest degree of the edge spherical harmonics.
    correlation : int
        Body order minus one of the product basis per layer.
    r_max : float
        Radial cutoff, Å.
    num_interactions : int
        Message-passing layers.
    max_num_epochs : int
        Training epochs (passes over the training split).
    batch_size : int
        Training batch size, configurations; clipped to the training-split size
        because MACE drops incomplete last batches.
    valid_batch_size : int
        Validation batch size, configurations.
    lr : float
        Adam learning rate for a cold start (per step, dimensionless).
    warm_start_epochs : int or None
        Epochs when warm-starting (``None``: ``max_num_epochs``).  A warm start
        begins close to its minimum and needs fewer passes.
    warm_start_lr : float or None
        Learning rate when warm-starting from a previous model; ``None`` uses
        ``lr``.  Lower than ``lr`` because MACE always keeps a trained epoch,
        never the starting weights, and lr=0.01 first undoes part of the
        warm start (measured: validation loss 0.008 -> 0.018 after one epoch).
    valid_fraction : float
        Fraction of frames held out for validation (``0 < f < 1``); MACE always
        keeps at least one validation configuration.
    energy_weight : float
        Loss weight of the per-atom energy error, (eV/atom)^-2.  High because
        the flywheel ranks by energy: on 300 EMT Cu-Al frames, 40 epochs,
        held-out MAE E/F/S = 2.6 meV/atom, 19 meV/Å, 3.2 meV/Å^3 at 100 vs
        32.7, 10, 25.6 at 1.
    forces_weight : float
        Loss weight of the force error, (eV/Å)^-2.
    stress_weight : float
        Loss weight of the stress error, (eV/Å^3)^-2; ``0`` trains on energies
        and forces only.
    E0s : str or dict
        Isolated-atom reference energies in eV: ``"average"`` (least-squares
        fit on the training split) or an explicit ``{Z: eV}`` mapping.  Frames
        with ``info["config_type"] == "IsolatedAtom"`` override both (MACE).
    ema : bool
        Keep an exponential moving average of the weights and evaluate/save it;
        damps the epoch-to-epoch noise that tiny data sets otherwise show.
    ema_decay : float
        Decay factor of the moving average (per optimiser step).
    patience : int or None
        Stop after this many epochs without validation improvement; ``None``
        disables early stopping.
    device : str
        Torch device for training (``"cpu"``, ``"cuda"``).
    default_dtype : str
        ``"float32"`` or ``"float64"``.  float32 trains ~1.5x faster on one
        CPU thread (3.0 vs 4.4 s/epoch, 270 configs of 2-10 atoms) and its
        rounding (~1e-7 eV/atom) is far below the model error (meV/atom).
    num_threads : int
        ``OMP_NUM_THREADS`` for the trainer subprocess.
    parallel : int
        Worker processes :func:`train_ensemble` runs side by side; the members
        are dealt to them and each worker trains its share one after another in
        one process.  On a CPU with ``k`` free cores use ``k // num_threads``;
        on a GPU the workers share the device (``benchmarks/training.py``).
    timeout_s : float or None
        Wall-clock limit for one training run in seconds; ``None`` = no limit.
    extra_args : tuple of str
        Further raw ``run_train`` arguments, appended last (they win).
    """

    num_channels: int = 16
    max_L: int = 0
    max_ell: int = 3
    correlation: int = 3
    r_max: float = 5.0
    num_interactions: int = 2
    max_num_epochs: int = 40
    batch_size: int = 8
    valid_batch_size: int = 32
    lr: float = 0.01
    warm_start_epochs: int | None = None
    warm_start_lr: float | None = 1e-3
    valid_fraction: float = 0.1
    energy_weight: float = 100.0
    forces_weight: float = 10.0
    stress_weight: float = 1.0
    E0s: str | dict[int, float] = "average"
    ema: bool = True
    ema_decay: float = 0.99
    patience: int | None = None
    device: str = "cpu"
    default_dtype: str = "float32"
    num_threads: int = 1
    parallel: int = 1
    timeout_s: float | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def _voigt_stress(stress: object) -> np.ndarray:
    """Return an ASE-ordered Voigt 6-vector (xx, yy, zz, yz, xz, xy) in eV/Å^3."""
    s = np.asarray(stress, dtype=float)
    if s.shape == (6,):
        return s
    if s.shape == (9,):
        s = s.reshape(3, 3)
    if s.shape == (3, 3):
        return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    raise ValueError(f"stress must be a Voigt 6-vector or 3x3, got shape {s.shape}")


def frames_to_extxyz(frames: Sequence, path: Path) -> Path:
    """Write labelled frames as an extxyz file that MACE can train on.

    Only geometry, the ``REF_*`` labels and MACE's ``config_*`` weights are
    written (no calculator results, no other info/arrays).

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Each frame needs ``info["REF_energy"]`` (total energy, eV); optionally
        ``arrays["REF_forces"]`` (eV/Å, shape ``(n, 3)``) and
        ``info["REF_stress"]`` (eV/Å^3, ASE sign convention, Voigt 6-vector or
        3x3).  Missing forces/stress get zero loss weight in MACE.
    path : Path
        Output file; parent directories are created.

    Returns
    -------
    Path
        ``path``.  Raises ``ValueError`` for missing energies or bad shapes.
    """
    import ase
    import ase.io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = []
    for i, atoms in enumerate(frames):
        if ENERGY_KEY not in atoms.info:
            raise ValueError(f"frame {i} has no info[{ENERGY_KEY!r}]")
        # Fresh Atoms: drops calculators and unserialisable info/arrays that
        # would make the extxyz writer fail or shadow the REF_* labels.
        out = ase.Atoms(
            numbers=atoms.get_atomic_numbers(),
            positions=atoms.get_positions(),
            cell=atoms.get_cell(),
            pbc=atoms.get_pbc(),
        )
        out.info[ENERGY_KEY] = float(atoms.info[ENERGY_KEY])
        if FORCES_KEY in atoms.arrays:
            forces = np.asarray(atoms.arrays[FORCES_KEY], dtype=float)
            if forces.shape != (len(atoms), 3):
                raise ValueError(f"frame {i}: {FORCES_KEY} has shape {forces.shape}")
            out.arrays[FORCES_KEY] = forces
        if atoms.info.get(STRESS_KEY) is not None:
            out.info[STRESS_KEY] = _voigt_stress(atoms.info[STRESS_KEY])
        for key, value in atoms.info.items():
            if _PASSTHROUGH_INFO.match(key):
                out.info[key] = value
        clean.append(out)
    if not clean:
        raise ValueError("no frames to write")
    ase.io.write(path, clean, format="extxyz")
    logger.debug("wrote %d frames to %s", len(clean), path)
    return path


def _scan_xyz(path: Path) -> tuple[int, set[int]]:
    """Count the frames and collect the atomic numbers of an extxyz file."""
    import ase.io

    n, zs = 0, set()
    for atoms in ase.io.iread(str(path), index=":", format="extxyz"):
        n += 1
        zs.update(int(z) for z in atoms.get_atomic_numbers())
    return n, zs


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
_LOAD_LOCK = threading.Lock()


def _model_elements(model_path: Path) -> set[int]:
    """Atomic numbers a saved MACE model was built for."""
    import mace
    import torch

    # Unpickling MACE's torch.fx modules is not thread-safe ("CURRENT_PATCHER is
    # None in finally block"); train_mace_model may be called from threads.
    with _LOAD_LOCK:
        model = torch.load(str(model_path), map_location="cpu", weights_only=False)
    return {int(z) for z in model.atomic_numbers}


def _mace_cli_args(
    train_xyz: Path,
    workdir: Path,
    *,
    seed: int,
    name: str,
    settings: MaceTrainSettings,
    batch_size: int,
    warm_start: Path | None,
) -> list[str]:
    """Translate settings into ``mace.cli.run_train`` arguments."""
    s = settings
    flags: dict[str, object] = {
        "name": name,
        "seed": seed,
        "work_dir": workdir,
        "train_file": train_xyz,
        "valid_fraction": s.valid_fraction,
        "model": "MACE",
        "num_channels": s.num_channels,
        "max_L": s.max_L,
        "max_ell": s.max_ell,
        "correlation": s.correlation,
        "r_max": s.r_max,
        "num_interactions": s.num_interactions,
        "max_num_epochs": s.max_num_epochs,
        "batch_size": batch_size,
        "valid_batch_size": s.valid_batch_size,
        "lr": s.lr,
        "energy_weight": s.energy_weight,
        "forces_weight": s.forces_weight,
        # "weighted" ignores stress; "stress" adds the stress term.
        "loss": "stress" if s.stress_weight > 0 else "weighted",
        "stress_weight": s.stress_weight,
        "E0s": s.E0s,
        "device": s.device,
        "default_dtype": s.default_dtype,
        "error_table": "PerAtomMAE",
        # The end-of-run matplotlib plots cost seconds and nobody reads them.
        "plot": False,
        "pin_memory": s.device != "cpu",
    }
    if isinstance(s.E0s, dict):
        flags["E0s"] = repr({int(z): float(e) for z, e in s.E0s.items()})
    if s.ema:
        flags["ema_decay"] = s.ema_decay
    if s.patience is not None:
        flags["patience"] = s.patience
    if warm_start is not None:
        flags["foundation_model"] = warm_start
        # Plain warm start: no replay head and no forced lr=1e-4/EMA override.
        flags["multiheads_finetuning"] = False
        # Keep the old model's element table so the embeddings are copied
        # verbatim (a smaller table rescales them by sqrt(n_old/n_new)).
        flags["foundation_model_elements"] = True
        if s.warm_start_lr is not None:
            flags["lr"] = s.warm_start_lr
        if s.warm_start_epochs is not None:
            flags["max_num_epochs"] = s.warm_start_epochs
        if not isinstance(s.E0s, dict):
            # Re-fitting E0s on the new data would shift every prediction by
            # sum(dE0) and throw the warm start away; keep the old model's.
            flags["E0s"] = "foundation"
    args = [f"--{key}={value}" for key, value in flags.items()]
    if s.ema:
        args.append("--ema")  # store_true flag: takes no value
    return args + list(s.extra_args)


def _clear_stale_outputs(workdir: Path, name: str, seed: int) -> None:
    """Remove outputs of an earlier run with the same tag.

    MACE's final model is loaded from the checkpoint with the highest epoch for
    the tag, so a leftover checkpoint from a longer earlier run would silently
    be returned instead of the new model.
    """
    tag = f"{name}_run-{seed}"
    for pattern in (f"checkpoints/{tag}*", f"{name}.model", f"{name}_compiled.model"):
        for stale in workdir.glob(pattern):
            logger.info("removing stale MACE output %s", stale)
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()


def _log_tail(path: Path, n_lines: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n_lines:])


def _prepare_member(
    train_xyz: Path,
    workdir: Path,
    *,
    seed: int,
    settings: MaceTrainSettings,
    warm_start: Path | None,
    name: str,
) -> dict:
    """Check the data, clear stale outputs and build one member's trainer arguments."""
    train_xyz = Path(train_xyz).resolve()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    s = settings
    if not 0.0 < s.valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {s.valid_fraction}")
    n_frames, elements = _scan_xyz(train_xyz)
    if n_frames < 2:
        raise ValueError(f"need at least 2 frames to train, got {n_frames}")
    # Mirror MACE's split (random_train_valid_split) to size the batches.
    n_train = min(n_frames - int(s.valid_fraction * n_frames), n_frames - 1)
    batch_size = max(1, min(s.batch_size, n_train))
    if batch_size < s.batch_size:
        logger.info("batch_size %d for %d training frames", batch_size, n_train)

    if warm_start is not None:
        warm_start = Path(warm_start).resolve()
        missing = elements - _model_elements(warm_start)
        if missing:
            logger.warning(
                "warm-start model %s lacks elements %s; cold start",
                warm_start,
                sorted(missing),
            )
            warm_start = None

    _clear_stale_outputs(workdir, name, seed)
    argv = _mace_cli_args(
        train_xyz,
        workdir,
        seed=seed,
        name=name,
        settings=s,
        batch_size=batch_size,
        warm_start=warm_start,
    )
    log_path = workdir / f"{name}_train.log"
    log_path.write_text("# mace.cli.run_train " + " ".join(argv) + "\n")
    logger.info(
        "training MACE %s: seed=%d, %d frames, warm start %s",
        name,
        seed,
        n_frames,
        warm_start,
    )
    return {"argv": [str(a) for a in argv], "log": str(log_path), "cwd": str(workdir),
            "model": str(workdir / f"{name}.model"), "name": name}


def _train_group(members: Sequence[dict], settings: MaceTrainSettings,
                 report_path: Path) -> dict:
    """Train ``members`` one after another in one worker process.

    Returns the worker's report (:mod:`flywheel.makers.train.worker`); raises
    ``RuntimeError`` with the log tail of every member that failed or timed out.
    """
    import json
    import tempfile

    threads = str(settings.num_threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    report_path = Path(report_path)
    report_path.unlink(missing_ok=True)
    spec = {"members": [{k: m[k] for k in ("argv", "log", "cwd")} for m in members],
            "report": str(report_path)}
    timeout = (None if settings.timeout_s is None
               else settings.timeout_s * len(members))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    worker_log = report_path.with_suffix(".log")
    try:
        with worker_log.open("w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "flywheel.makers.train.worker", f.name],
                env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                check=False)
        returncode: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        returncode = f"timed out after {timeout} s"
    finally:
        Path(f.name).unlink(missing_ok=True)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        report = {"startup_s": None, "members": []}
    done = report["members"]
    failed = []
    for k, member in enumerate(members):
        entry = done[k] if k < len(done) else {"ok": False,
                                                "error": f"worker {returncode}"}
        if not entry["ok"] or not Path(member["model"]).exists():
            log = Path(member["log"])
            why = entry.get("error", "no model")
            failed.append(f"MACE training {member['name']} failed ({why}); log "
                          f"{log}:\n{_log_tail(log)}")
    if failed:
        if not done:
            failed.append(f"worker log {worker_log}:\n{_log_tail(worker_log)}")
        raise RuntimeError("\n".join(failed))
    return report


def train_mace_model(
    train_xyz: Path,
    workdir: Path,
    *,
    seed: int,
    settings: MaceTrainSettings,
    warm_start: Path | None = None,
    name: str = "model",
) -> Path:
    """Train one MACE model with MACE's own trainer (``mace.cli.run_train``), in a
    worker process (:mod:`flywheel.makers.train.worker`).

    Parameters
    ----------
    train_xyz : Path
        extxyz file written by :func:`frames_to_extxyz`; MACE splits it into
        train/validation with ``settings.valid_fraction`` (seeded by ``seed``).
    workdir : Path
        Directory for MACE's outputs and the captured log ``{name}_train.log``.
    seed : int
        Seed for initialisation, batching and the train/validation split.
    settings : MaceTrainSettings
        Hyper-parameters.
    warm_start : Path or None
        Saved ``.model`` to start from.  Its architecture, cutoff and (unless
        ``settings.E0s`` is a dict) E0s are kept; ``settings.warm_start_lr``
        applies.  If the data contain elements the model lacks, a cold start
        is done instead (with a warning).
    name : str
        MACE experiment name; the model is saved as ``workdir/{name}.model``.

    Returns
    -------
    Path
        The saved model (``torch.load``-able ``torch.nn.Module``); the weights
        are those of the epoch with the lowest validation loss.

    Raises
    ------
    ValueError
        For fewer than two frames or an invalid ``valid_fraction``.
    RuntimeError
        If the trainer fails or times out; the message has the log tail.
    """
    member = _prepare_member(train_xyz, workdir, seed=seed, settings=settings,
                             warm_start=warm_start, name=name)
    _train_group([member], settings, Path(member["cwd"]) / f"{name}_worker.json")
    return Path(member["model"])


def parallel_members(n_members: int, device: str, threads: int) -> int:
    """Members to train side by side: all of them on a GPU, as many as the free
    cores allow on a CPU (``cores // threads`` per trainer).
    """
    if not str(device).startswith("cpu"):
        return n_members
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return max(1, min(n_members, cores // max(threads, 1)))


def train_ensemble(
    frames: Sequence,
    workdir: Path,
    *,
    n_models: int,
    settings: MaceTrainSettings,
    seeds: Sequence[int] | None = None,
    warm_start: Sequence[Path | None] | None = None,
    progress: bool = False,
    base_seed: int = 0,
) -> list[Path]:
    """Train an ensemble of MACE models on the same frames.

    The members are dealt to ``settings.parallel`` worker processes that run side
    by side; each worker trains its members one after another, so the imports and
    the device start are paid once per worker, not once per member
    (``benchmarks/training.py``).  ``workdir/training_report.json`` records the
    start-up and training seconds and the seconds per epoch of every member
    (:func:`training_report`).

    Parameters
    ----------
    frames : sequence of ase.Atoms
        Labelled frames (see :func:`frames_to_extxyz`).
    workdir : Path
        Gets ``train.xyz`` and one ``member_{i}`` sub-directory per model.
    n_models : int
        Ensemble size.
    settings : MaceTrainSettings
        Hyper-parameters shared by all members.
    seeds : sequence of int or None
        One seed per member; default ``base_seed + i``.  Different seeds give
        different initialisations, batch orders and validation splits.
    warm_start : sequence of Path or None
        Member ``i`` starts from ``warm_start[i]`` (entries may be ``None``).
    progress : bool
        Show a tqdm progress bar (one step per worker).
    base_seed : int
        Offset of the default seeds (e.g. the flywheel round number x 100).

    Returns
    -------
    list of Path
        Saved model files, in member order.
    """
    import json

    if n_models < 1:
        raise ValueError("n_models must be >= 1")
    seeds = (
        list(seeds) if seeds is not None else [base_seed + i for i in range(n_models)]
    )
    if len(seeds) != n_models:
        raise ValueError(f"got {len(seeds)} seeds for {n_models} models")
    starts = list(warm_start) if warm_start is not None else [None] * n_models
    if len(starts) != n_models:
        raise ValueError(f"got {len(starts)} warm-start models for {n_models} models")

    workdir = Path(workdir)
    train_xyz = frames_to_extxyz(list(frames), workdir / "train.xyz")
    members = [
        _prepare_member(train_xyz, workdir / f"member_{i}", seed=seeds[i],
                        settings=settings, warm_start=starts[i], name=f"model_{i}")
        for i in range(n_models)
    ]
    n_workers = max(1, min(settings.parallel, n_models))
    groups = [list(range(w, n_models, n_workers)) for w in range(n_workers)]

    from concurrent.futures import ThreadPoolExecutor

    # Threads only wait on the worker processes.
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures = [pool.submit(_train_group, [members[i] for i in group], settings,
                               workdir / f"worker_{w}.json")
                   for w, group in enumerate(groups)]
        if progress:
            from concurrent.futures import as_completed

            from tqdm.auto import tqdm

            for _ in tqdm(as_completed(futures), total=n_workers,
                          desc=f"MACE ensemble ({n_models} in {n_workers} workers)",
                          unit="worker"):
                pass
        reports = [f.result() for f in futures]
    summary = {"workers": [], "members": [None] * n_models}
    for group, report in zip(groups, reports, strict=True):
        summary["workers"].append({"members": group, "startup_s": report["startup_s"]})
        for i, entry in zip(group, report["members"], strict=True):
            summary["members"][i] = {
                "seconds": entry["seconds"],
                "seconds_per_epoch": seconds_per_epoch(Path(members[i]["log"])),
            }
    (workdir / "training_report.json").write_text(json.dumps(summary, indent=1))
    return [Path(m["model"]) for m in members]


def training_report(workdir: Path) -> dict:
    """What :func:`train_ensemble` measured in ``workdir``: per worker its members
    and ``startup_s``, per member ``seconds`` and ``seconds_per_epoch``."""
    import json

    return json.loads((Path(workdir) / "training_report.json").read_text())


_STAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) INFO: "
                       r"(Initial|Epoch \d+):")


def seconds_per_epoch(log_path: Path) -> float | None:
    """Mean wall seconds per training epoch (validation included) from a captured
    MACE log: from the evaluation before training to the last epoch's."""
    from datetime import datetime

    stamps = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if m := _STAMP_RE.match(line):
            stamps.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f"))
    if len(stamps) < 2:
        return None
    return (stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1)


_EPOCH_RE = re.compile(
    r"(Initial|Epoch (\d+)): head: (\S+), loss=([-+0-9.eE]+), "
    r"MAE_E_per_atom=\s*([-+0-9.eE]+) meV"
)


def read_validation_curve(log_path: Path) -> list[dict[str, float]]:
    """Parse the validation curve out of a captured MACE training log.

    Parameters
    ----------
    log_path : Path
        ``{name}_train.log`` written by :func:`train_mace_model`.

    Returns
    -------
    list of dict
        One entry per evaluation, in order: ``epoch`` (-1 for the evaluation
        before training), ``loss`` (MACE's weighted validation loss) and
        ``mae_e_per_atom`` (eV/atom).
    """
    curve = []
    for line in Path(log_path).read_text(errors="replace").splitlines():
        if m := _EPOCH_RE.search(line):
            epoch = -1 if m.group(2) is None else int(m.group(2))
            mae = float(m.group(5)) / 1000.0
            curve.append(
                {"epoch": epoch, "loss": float(m.group(4)), "mae_e_per_atom": mae}
            )
    return curve
