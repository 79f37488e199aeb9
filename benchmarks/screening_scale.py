"""Sharded screening of a synthetic pool through flywheel's screening jobs (issue 11).

Starts a local database server, stores ``--pool`` generated Cu-Al candidates (4-atom
fcc cells, random occupations, strained and rattled) and a two-member MACE ensemble
of flywheel's default architecture (1 epoch on EMT frames: the weights do not matter
for speed), then runs the ``screen`` jobs (``ScreenShardMaker``, the jobs a round
adds when ``filter.shard_size`` is set) one after the other through jobflow, and
reports candidates per second: end to end per shard, and the model-and-graphs part
alone (``predict_energies`` on the same structures) to show where the time goes.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/screening_scale.py --pool 10000
    python benchmarks/screening_scale.py --pool 1000000 --shard-size 100000 --device cuda

Writes ``benchmarks/results/screening_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "screening_scale.json"


def cells(n: int, seed: int) -> list:
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.symbols[rng.random(len(atoms)) < 0.5] = "Al"
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))),
                       scale_atoms=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        out.append(atoms)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", type=int, default=10_000)
    p.add_argument("--shard-size", type=int, default=2_500)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    os.environ["FLYWHEEL_DEVICE"] = args.device
    from ase.calculators.emt import EMT
    from jobflow import Flow, JobStore, run_locally
    from maggma.stores import MemoryStore
    from monty.json import jsanitize
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymongo import InsertOne

    from flywheel.config import CampaignConfig
    from flywheel.db.server import LocalServer
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.filter.core import load_models, predict_energies
    from flywheel.makers.filter.jobs import ScreenShardMaker
    from flywheel.makers.train.core import MaceTrainSettings, train_ensemble

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    tmp = Path(tempfile.mkdtemp())
    server = LocalServer(data_dir=tmp / "db", port=port)
    server.start()
    try:
        frames = cells(24, 0)
        for a in frames:
            a.calc = EMT()
            a.info["REF_energy"] = a.get_potential_energy()
            a.arrays["REF_forces"] = a.get_forces()
        paths = train_ensemble(frames, tmp / "m", n_models=2, settings=MaceTrainSettings(
            max_num_epochs=1, stress_weight=0.0, device=args.device))
        config = CampaignConfig(
            name="scale", chemistry={"elements": ["Cu", "Al"]},
            filter={"ensemble_size": 2, "shard_size": args.shard_size},
            database={"uri": f"{server.uri}/s{uuid.uuid4().hex[:6]}"})
        db = CampaignDB(config.database.uri, config.name)
        db.ensure_indexes()
        db.materials.insert_many([
            {"campaign": "scale", "material_id": m, "formula": f, "chemsys": f,
             "energy_per_atom": 0.0, "round": 0, "generator": "seed", "stable": True}
            for m, f in (("m-cu", "Cu"), ("m-al", "Al"))])
        for i, path in enumerate(paths):
            db.put_file("models", path.name, path.read_bytes(), round=0, member=i)
        base = [AseAtomsAdaptor.get_structure(a) for a in cells(1000, 1)]
        t0 = time.perf_counter()
        for lo in range(0, args.pool, 20_000):
            db.bulk_write("candidates", [InsertOne({
                "campaign": "scale", "candidate_id": f"c{k:07d}", "round": 1,
                "status": "generated", "generator": "test",
                "formula": base[k % 1000].composition.reduced_formula,
                "chemsys": "Al-Cu", "structure": jsanitize(base[k % 1000].as_dict())})
                for k in range(lo, min(lo + 20_000, args.pool))], batch=5000)
        insert_s = time.perf_counter() - t0
        n_shards = -(-args.pool // args.shard_size)
        shard_rows = []
        t0 = time.perf_counter()
        for k in range(n_shards):
            j = ScreenShardMaker().make(config, 1, k, n_shards)
            res = run_locally(Flow([j]), store=JobStore(MemoryStore()), log=False,
                              ensure_success=True)
            shard_rows.append(res[j.uuid][1].output)
            print(f"shard {k + 1}/{n_shards}: {shard_rows[-1]['written']} in "
                  f"{shard_rows[-1]['seconds']:.1f} s", flush=True)
        screen_s = time.perf_counter() - t0
        models = load_models(paths, device=args.device)
        sample = base * max(1, min(args.pool, 10_000) // 1000)
        predict_energies(models, sample[:64], device=args.device)  # warm-up
        t0 = time.perf_counter()
        predict_energies(models, sample, device=args.device, batch_size=256)
        model_rate = len(sample) / (time.perf_counter() - t0)
    finally:
        server.stop()
    import torch

    card = (torch.cuda.get_device_name() if args.device.startswith("cuda")
            else f"{platform.machine()} CPU, {os.cpu_count()} cores, "
                 f"{torch.get_num_threads()} torch thread(s)")
    doc = {"device": args.device, "card": card, "pool": args.pool,
           "shard_size": args.shard_size, "shards": n_shards,
           "insert_seconds": insert_s, "screen_seconds": screen_s,
           "screen_rate_per_s": args.pool / screen_s,
           "shard_seconds": [r["seconds"] for r in shard_rows],
           "predict_energies_rate_per_s": model_rate,
           "notes": "screen_rate: the screening jobs end to end (read the shard from "
                    "the database, structures, hull energies, graphs, 2-member "
                    "ensemble, bulk write); predict_energies_rate: graphs and models "
                    "alone on the same 4-atom cells. The database is flywheel's local "
                    "server (SecantusDB)."}
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(json.dumps({k: v for k, v in doc.items() if k != "shard_seconds"}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
