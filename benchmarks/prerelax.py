"""Pre-relaxation throughput: flywheel's lockstep batched CHGNet vs the ASE loop.

``makers/filter/prerelax.py`` advances one ASE FIRE optimizer per structure in lockstep
so that every step is one batched CHGNet call. This benchmark keeps the measurement
that justifies writing it instead of using a library loop, in one run, interleaved:

* ``lockstep``: :func:`prerelax_structures` (``chgnet_evaluator``, batched);
* ``ase_calculator``: the same optimizers one structure at a time through
  ``CHGNetCalculator`` (:func:`calculator_evaluator`; identical trajectories);
* ``structoptimizer``: chgnet's own ``StructOptimizer.relax`` per structure (FIRE,
  FrechetCellFilter), the obvious library baseline.

Cells: rock-salt AB conventional cells (8 atoms; LiF, NaCl, MgO, FeO), randomly
strained (±5 %) and rattled (0.05 Å). Same steps and fmax for all three.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/prerelax.py [--n 16] [--steps 50]

Prints a table and writes ``benchmarks/results/prerelax.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "prerelax.json"
PAIRS = [("Li", "F", 4.03), ("Na", "Cl", 5.69), ("Mg", "O", 4.25), ("Fe", "O", 4.33)]


def cells(n: int, seed: int = 0) -> list:
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a_el, b_el, a = PAIRS[i % len(PAIRS)]
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [a_el, b_el],
                                      [[0, 0, 0], [0.5, 0.5, 0.5]])
        strain = np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))
        s = Structure(Lattice(s.lattice.matrix @ strain), s.species, s.frac_coords)
        s.perturb(0.05, 0.0)
        out.append(s)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--fmax", type=float, default=0.1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()

    import torch
    from chgnet.model import StructOptimizer
    from chgnet.model.dynamics import CHGNetCalculator

    from flywheel.makers.filter.prerelax import (
        calculator_evaluator,
        load_chgnet,
        prerelax_structures,
        relax_lockstep,
    )

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    structures = cells(args.n)
    model = load_chgnet()
    calc = CHGNetCalculator(model=model, use_device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        opt = StructOptimizer(model=model, optimizer_class="FIRE", use_device="cpu")

    def lockstep():
        return [r.energy_final for r in prerelax_structures(
            structures, "chgnet", steps=args.steps, fmax=args.fmax, progress=False)]

    def ase_calculator():
        return [r.energy_final for r in relax_lockstep(
            structures, calculator_evaluator(calc), steps=args.steps, fmax=args.fmax,
            progress=False)]

    def structoptimizer():
        out = []
        for s in structures:
            with contextlib.redirect_stdout(io.StringIO()):
                r = opt.relax(s, fmax=args.fmax, steps=args.steps, relax_cell=True,
                              verbose=False)
            out.append(float(r["trajectory"].energies[-1]) / len(s))
        return out

    methods = {"lockstep": lockstep, "ase_calculator": ase_calculator,
               "structoptimizer": structoptimizer}
    times: dict[str, list[float]] = {k: [] for k in methods}
    energies: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, fn in methods.items():  # interleaved: the machine is shared
            t = time.perf_counter()
            energies[name] = fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = np.array(energies["ase_calculator"])
    result = {
        "benchmark": "prerelax",
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "n_structures": args.n, "atoms_per_cell": 8, "steps": args.steps,
        "fmax": args.fmax, "repeats": args.repeats,
        "seconds_median": med,
        "seconds_all": times,
        "speedup_lockstep_vs_ase_calculator": med["ase_calculator"] / med["lockstep"],
        "speedup_lockstep_vs_structoptimizer": med["structoptimizer"] / med["lockstep"],
        "max_abs_energy_diff_lockstep_vs_ase_calculator_ev_per_atom": float(
            np.max(np.abs(np.array(energies["lockstep"]) - ref))),
        "max_abs_energy_diff_structoptimizer_vs_ase_calculator_ev_per_atom": float(
            np.max(np.abs(np.array(energies["structoptimizer"]) - ref))),
    }
    for k, v in med.items():
        print(f"{k:16s} {v:7.2f} s  ({args.n} cells x {args.steps} steps)")
    print(f"lockstep vs ase_calculator: {result['speedup_lockstep_vs_ase_calculator']:.2f}x,"
          f" vs structoptimizer: {result['speedup_lockstep_vs_structoptimizer']:.2f}x")
    print("max |dE| lockstep vs ase_calculator: "
          f"{result['max_abs_energy_diff_lockstep_vs_ase_calculator_ev_per_atom']:.2e} eV/atom")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
