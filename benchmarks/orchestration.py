"""Orchestration overhead per oracle relaxation: FireWorks + local server vs bare.

For N small cells the script times

* **bare**: ``run_oracle`` in one process (the CHGNet relaxations alone), and
* **fireworks**: the same relaxations as flywheel ``RelaxMaker`` jobs, ``chunk`` per
  firework, submitted to a LaunchPad on a fresh local SecantusDB server and run by one
  stock ``rlaunch rapidfire`` worker (process start, job (de)serialisation, JobStore
  writes, candidate/material/frames writes, FireWorks bookkeeping),

for chunk sizes 1 and 10, and reports the overhead per relaxation
``(fireworks - bare) / N``. Writes ``benchmarks/results/orchestration.json``.

Usage: ``python benchmarks/orchestration.py [--n 20]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def structures(n: int):
    """n distinct small cells (rattled rocksalt/CsCl alkali halides, 2-8 atoms)."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(0)
    out = []
    pairs = [("Li", "Cl", 5.1), ("Na", "Cl", 5.6), ("K", "Cl", 6.3), ("Na", "Br", 5.9)]
    for i in range(n):
        a, b, lat = pairs[i % len(pairs)]
        s = Structure(Lattice.cubic(lat * rng.uniform(0.97, 1.03)), [a, a, a, a, b, b, b, b],
                      [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                       [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]])
        s.perturb(0.05 + 0.01 * (i // len(pairs)))
        out.append(s)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20, help="relaxations per measurement")
    args = p.parse_args(argv)

    from jobflow import Flow
    from jobflow.managers.fireworks import flow_to_workflow

    from flywheel.config import campaign_from_dict
    from flywheel.db.server import LocalServer
    from flywheel.db.stores import CampaignDB, make_launchpad
    from flywheel.db.tags import CPU, tag_job
    from flywheel.launchers.fwfiles import write_fw_files
    from flywheel.makers.common import structure_fields
    from flywheel.makers.relax import run
    from flywheel.makers.relax.jobs import RelaxMaker

    cells = structures(args.n)
    oracle = {"fmax": 0.1, "steps": 60, "chunk_size": 1, "max_frames": 4}
    results: dict = {"n": args.n, "oracle": oracle, "machine": platform.node(),
                     "cpus": os.cpu_count(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        srv = LocalServer(data_dir=tmp / "db", port=free_port())
        srv.start()
        try:
            cfg0 = campaign_from_dict({"name": "bench", "chemistry": {
                "elements": ["Li", "Na", "K", "Cl", "Br"]}, "oracle": oracle,
                "database": {"uri": f"{srv.uri}/bench"}})
            # bare: one process, the model loaded once (warm-up excluded)
            run.run_oracle(cells[:1], cfg0.oracle)
            t0 = time.perf_counter()
            bare = run.run_oracle(cells, cfg0.oracle)
            results["bare_seconds"] = time.perf_counter() - t0
            results["bare_failed"] = sum(not r.ok for r in bare)
            print(f"bare: {args.n} relaxations in {results['bare_seconds']:.1f} s "
                  f"({results['bare_seconds'] / args.n:.2f} s each)")

            for chunk in (1, 10):
                uri = f"{srv.uri}/bench_c{chunk}"
                cfg = cfg0.model_copy(deep=True)
                cfg.database.uri = uri
                cfg.oracle.chunk_size = chunk
                db = CampaignDB(uri, "bench")
                db.ensure_indexes()
                ids = []
                for i, s in enumerate(cells):
                    cid = f"r0-see-{i:05d}"
                    ids.append(cid)
                    db.candidates.insert_one(db.q(
                        candidate_id=cid, round=0, generator="seed",
                        structure=s.as_dict(), status="selected", selected_round=0,
                        **structure_fields(s)))
                n_chunks = -(-args.n // chunk)
                jobs = [tag_job(RelaxMaker().make(cfg, 0, ids, k, n_chunks), CPU,
                                "bench", 0, "relax") for k in range(n_chunks)]
                lp = make_launchpad(uri)
                lp.reset("", require_password=False)
                lp.add_wf(flow_to_workflow(Flow(jobs)))
                d = tmp / f"c{chunk}"
                write_fw_files(d, uri)
                env = {**os.environ, "JOBFLOW_CONFIG_FILE": str(d / "jobflow.yaml"),
                       "FW_CONFIG_FILE": str(d / "FW_config.yaml")}
                t0 = time.perf_counter()
                subprocess.run(
                    [Path(sys.executable).with_name("rlaunch"), "-l",
                     d / "my_launchpad.yaml", "-w", d / "my_fworker_cpu.yaml",
                     "rapidfire"], cwd=d, env=env, check=True, capture_output=True)
                wall = time.perf_counter() - t0
                done = db.materials.count_documents({})
                completed = lp.fireworks.count_documents({"state": "COMPLETED"})
                overhead = (wall - results["bare_seconds"]) / args.n
                results["runs"][f"chunk_{chunk}"] = {
                    "fireworks": n_chunks, "completed": completed, "materials": done,
                    "wall_seconds": wall, "overhead_per_relaxation_s": overhead,
                    "ratio_to_bare": wall / results["bare_seconds"],
                }
                print(f"chunk {chunk:>2}: {n_chunks} fireworks, {wall:.1f} s wall, "
                      f"overhead {overhead:.2f} s per relaxation "
                      f"({wall / results['bare_seconds']:.2f}x bare)")
        finally:
            srv.stop()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "orchestration.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
