"""Training an ensemble: start-up per member vs one worker process for several members.

Trains ``--members`` MACE members (flywheel's default filter architecture) on EMT
Cu-Al frames (``filter_throughput.emt_frames``) for ``--epochs`` epochs, three ways, in one run:

* ``process_per_member``: each member in its own fresh process, one after another
  (:func:`flywheel.makers.train.core.train_mace_model` per member): what an ensemble
  cost before issue 11, when every member paid the imports and the device start;
* ``one_worker``: all members in one worker process, one after another
  (:func:`train_ensemble` with ``parallel=1``): the start-up is paid once;
* ``side_by_side``: ``--parallel`` workers at once (default: one per member on a
  GPU, one per core on a CPU), the members dealt to them: what the campaign's
  train job does (:func:`flywheel.makers.train.core.parallel_members`).

For each: wall seconds, worker start-up seconds (interpreter to MACE imported), and
seconds per epoch of every member (from MACE's log, validation included).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/training.py [--device cuda]

Prints a table and writes ``benchmarks/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "training.json"
sys.path.insert(0, str(HERE))
from filter_throughput import emt_frames  # noqa: E402  (same cells, EMT labels)


def _per_epoch(paths: Sequence[Path]) -> list[float | None]:
    from flywheel.makers.train.core import seconds_per_epoch

    return [seconds_per_epoch(p.parent / f"{p.stem}_train.log") for p in paths]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--parallel", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from flywheel.makers.train.core import (
        MaceTrainSettings,
        frames_to_extxyz,
        parallel_members,
        train_ensemble,
        train_mace_model,
        training_report,
    )

    n = args.members
    parallel = args.parallel or parallel_members(n, args.device, 1)
    frames = emt_frames(args.frames)
    settings = MaceTrainSettings(max_num_epochs=args.epochs, device=args.device,
                                 stress_weight=0.0)
    modes = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        xyz = frames_to_extxyz(frames, tmp / "train.xyz")
        print(f"{n} members x {args.epochs} epochs on {len(frames)} frames, "
              f"{args.device}", flush=True)

        t = time.perf_counter()
        paths = [train_mace_model(xyz, tmp / "solo" / f"member_{i}", seed=i,
                                  settings=settings, name=f"model_{i}")
                 for i in range(n)]
        wall = time.perf_counter() - t
        starts = [json.loads((p.parent / f"model_{i}_worker.json").read_text())
                  ["startup_s"] for i, p in enumerate(paths)]
        modes["process_per_member"] = {
            "wall_s": wall, "workers": n, "startup_s": starts,
            "seconds_per_epoch": _per_epoch(paths)}

        for name, workers in (("one_worker", 1), ("side_by_side", parallel)):
            t = time.perf_counter()
            paths = train_ensemble(frames, tmp / name, n_models=n,
                                   settings=replace(settings, parallel=workers))
            wall = time.perf_counter() - t
            report = training_report(tmp / name)
            modes[name] = {
                "wall_s": wall, "workers": workers,
                "startup_s": [w["startup_s"] for w in report["workers"]],
                "seconds_per_epoch": [m["seconds_per_epoch"]
                                      for m in report["members"]]}
            print(f"  {name}: {wall:.1f} s", flush=True)

    import torch

    card = (torch.cuda.get_device_name() if args.device.startswith("cuda")
            else f"{platform.machine()} CPU, {os.cpu_count()} cores")
    base = modes["process_per_member"]["wall_s"]
    for mode in modes.values():
        mode["speedup_vs_process_per_member"] = base / mode["wall_s"]
        per = [s for s in mode["seconds_per_epoch"] if s is not None]
        mode["median_seconds_per_epoch"] = statistics.median(per) if per else None
    report = {
        "benchmark": "training",
        "device": args.device,
        "card": card,
        "members": n,
        "epochs": args.epochs,
        "frames": len(frames),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "notes": "wall_s: the whole ensemble; startup_s: per worker process, "
                 "interpreter start to torch+MACE imported (device start is in the "
                 "first member's time); seconds_per_epoch: per member, MACE's log "
                 "timestamps from the evaluation before training to the last epoch.",
        "modes": modes,
        "seconds_total": time.perf_counter() - t_all,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nensemble training on {card}")
    print("mode                 workers  wall s  speed-up  start-up s (each)   s/epoch")
    for name, m in modes.items():
        ups = ", ".join(f"{s:.1f}" for s in m["startup_s"])
        print(f"{name:20s} {m['workers']:7d}  {m['wall_s']:6.1f}  "
              f"{m['speedup_vs_process_per_member']:8.2f}  {ups:18s}  "
              f"{m['median_seconds_per_epoch']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
