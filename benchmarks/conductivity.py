"""MD ionic conductivity with CHGNet against published numbers (issue 12).

Runs flywheel's conductivity core (``flywheel.makers.conductivity.core``: NVT MD with
a Nosé-Hoover chain, pymatgen-analysis-diffusion's DiffusionAnalyzer, Arrhenius fit
with He et al. 2018 error bars) on

* **Li10GeP2S12** (LGPS, a superionic conductor; ``examples/structures``, the 50-atom
  cell of pymatgen-analysis-diffusion's test data), and
* **Li2O** (antifluorite, a poor Li conductor; mp-1960 from the shipped MP Li-Fe-O
  entries),

with CHGNet (weights inside the chgnet wheel), every (material, temperature) run in
its own process, ``--workers`` at a time, one thread each. The published values to
compare with are in ``LITERATURE`` (references in docs/conductivity.md).

CPU-sized on purpose: the 50-atom LGPS cell and 10 ps per temperature, where the
product's defaults are a ≥ 10 Å supercell and 50 ps (docs/conductivity.md). With
``--production-ps 50 --min-length 10`` on a GPU it runs the defaults.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/conductivity.py            # ~40 min, 2 cores
    python benchmarks/conductivity.py --refit                      # re-fit stored runs

Writes ``benchmarks/results/conductivity.json`` and ``conductivity.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "conductivity.json"

#: Published Li conductivity and activation energy (docs/conductivity.md has the
#: references). sigma in mS/cm at 300 K (room temperature for experiments).
LITERATURE = {
    "Li10GeP2S12": {
        "experiment": {"sigma_300K": 12.0, "Ea": 0.25,
                       "source": "Kamaya et al., Nat. Mater. 10, 682 (2011)"},
        "AIMD": {"sigma_300K": 13.0, "Ea": 0.21,
                 "source": "Mo, Ong, Ceder, Chem. Mater. 24, 15 (2012)"},
    },
    "Li2O": {
        "experiment": {"sigma_300K": None, "Ea": None,
                       "note": "intrinsic Li2O: about 1e-9 S/cm (1e-6 mS/cm) near room "
                               "temperature is often quoted; an insulator for Li+",
                       "source": "see docs/conductivity.md"},
    },
}

MATERIALS = {
    "Li10GeP2S12": {"temperatures": [800.0, 1000.0, 1200.0], "min_length": 8.0},
    # 2x2x2 primitive cells (24 atoms): CHGNet's angle graph makes dense Li2O ~5x
    # dearer per atom than LGPS, and a crystal without hops needs no large cell.
    "Li2O": {"temperatures": [1000.0, 1200.0], "min_length": 5.0},
}


def structure(name: str):
    from monty.serialization import loadfn
    from pymatgen.core import Structure

    if name == "Li10GeP2S12":
        return Structure.from_file(ROOT / "examples" / "structures" / "Li10GeP2S12.cif")
    entries = loadfn(ROOT / "examples" / "references" / "mp_Li-Fe-O_entries.json.gz")
    return next(e.structure for e in entries if e.entry_id == "mp-1960")


def one_run(name: str, temperature: float, settings: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from flywheel.makers.conductivity.core import (
        MDSettings,
        analyze_run,
        chgnet_calculator,
        make_supercell,
        run_nvt,
    )

    st = MDSettings(**{**settings, "min_length": MATERIALS[name]["min_length"]})
    cell = make_supercell(structure(name), st)
    run = run_nvt(cell, chgnet_calculator(), temperature, st)
    row = analyze_run(cell, run, st)
    row.update(material=name, n_atoms=len(cell), steps=run.steps,
               ms_per_step=1000 * run.seconds / run.steps)
    print(f"{name} {temperature:.0f} K: D = {row['diffusivity']:.3g} cm2/s, "
          f"n_eff = {row['n_eff']:.1f}, {run.seconds:.0f} s", flush=True)
    with open(OUT.with_suffix(".runs.jsonl"), "a") as f:  # survives a stopped run
        f.write(json.dumps(row) + "\n")
    return row


def rows_from_log(path: Path, settings: dict) -> list[dict]:
    """Runs of an earlier invocation recovered from its printed lines
    (``NAME T K: D = x cm2/s, ...``): the diffusivity is what the fit needs; the
    conductivity follows from it (Nernst-Einstein on the same cell)."""
    import re

    from flywheel.makers.conductivity.core import (
        MDSettings,
        _sigma_per_d,
        make_supercell,
    )

    rows = []
    pat = re.compile(r"^(\S+) (\d+) K: D = ([-+0-9.e]+) cm2/s, n_eff = [-+0-9.e]+, "
                     r"(\d+) s")
    for line in path.read_text().splitlines():
        if m := pat.match(line):
            name, t, d, secs = m.group(1), float(m.group(2)), float(m.group(3)), \
                float(m.group(4))
            st = MDSettings(**{**settings, "min_length": MATERIALS[name]["min_length"]})
            cell = make_supercell(structure(name), st)
            rows.append({"material": name, "temperature": t, "diffusivity": d,
                         "conductivity": d * _sigma_per_d(cell, "Li", t),
                         "production_ps": settings["production_ps"],
                         "n_atoms": len(cell), "seconds": secs,
                         "max_framework_displacement": None,
                         "source": f"log of an earlier run ({path.name})"})
    return rows


def fit_all(runs: list[dict], settings: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    from flywheel.makers.conductivity.core import (
        MDSettings,
        arrhenius,
        classify,
        make_supercell,
    )

    out = {}
    for name in MATERIALS:
        st = MDSettings(**{**settings, "min_length": MATERIALS[name]["min_length"]})
        cell = make_supercell(structure(name), st)
        # re-judged with the core's current definitions (runs of older versions)
        rows = sorted((classify(r, cell, st) for r in runs if r["material"] == name),
                      key=lambda r: r["temperature"])
        out[name] = {"per_temperature": rows, **arrhenius(cell, rows, st)}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (name, res), color in zip(results.items(), ("C0", "C3"), strict=False):
        rows = res["per_temperature"]
        for r in rows:
            x = 1000.0 / r["temperature"]
            if r["measurable"]:
                ax.errorbar(x, r["diffusivity"], yerr=r["diffusivity_std"], fmt="o",
                            color=color)
            else:
                ax.plot(x, r["diffusivity_upper"], marker="v", color=color, ls="none")
        if res["status"] == "fit":
            ts = np.linspace(300, max(r["temperature"] for r in rows), 50)
            d_t = res["diffusivity_target"]
            ea = res["activation_energy"]
            ax.plot(1000 / ts, d_t * np.exp(-ea / 8.617333e-5 * (1 / ts - 1 / 300)),
                    color=color, ls="--",
                    label=f"{name}: Ea = {ea:.2f} eV")
        else:
            ax.plot([], [], marker="v", color=color, ls="none",
                    label=f"{name}: below detection (upper bound)")
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel("Li diffusivity (cm²/s)")
    ax.set_title("CHGNet NVT MD, flywheel conductivity core")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--production-ps", type=float, default=10.0)
    p.add_argument("--equilibration-ps", type=float, default=2.0)
    p.add_argument("--min-length", type=float, default=8.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--refit", action="store_true",
                   help="re-fit the runs stored in the JSON instead of running MD")
    p.add_argument("--only", nargs="+", choices=list(MATERIALS),
                   help="run these materials only")
    p.add_argument("--reuse-log", type=Path,
                   help="take the other materials' runs from an earlier run's log "
                   "(its lines 'NAME T K: D = ...'; same settings)")
    p.add_argument("--lgps-production-ps", type=float,
                   help="production of the LGPS runs in --reuse-log, if different")
    args = p.parse_args()
    settings = {"production_ps": args.production_ps,
                "equilibration_ps": args.equilibration_ps,
                "min_length": args.min_length, "max_atoms": 1000}
    start = time.perf_counter()
    if args.refit:
        old = json.loads(OUT.read_text())
        settings = old["settings"]
        runs = [{**r, "material": name} for name, m in old["results"].items()
                for r in m["per_temperature"]]
        wall = old["wall_seconds"]
    else:
        names = args.only or list(MATERIALS)
        tasks = [(n, t) for n in names for t in MATERIALS[n]["temperatures"]]
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [pool.submit(one_run, n, t, settings) for n, t in tasks]
            runs = [f.result() for f in futures]
        wall = time.perf_counter() - start
        if args.reuse_log:
            old = dict(settings)
            if args.lgps_production_ps:
                old["production_ps"] = args.lgps_production_ps
            runs += [r for r in rows_from_log(args.reuse_log, old)
                     if r["material"] not in names]
    results = fit_all(runs, settings)
    lgps, li2o = results["Li10GeP2S12"], results["Li2O"]

    def n_li(row: dict) -> int:
        from flywheel.makers.conductivity.core import MDSettings, make_supercell

        name = row["material"]
        st = MDSettings(**{**settings, "min_length": MATERIALS[name]["min_length"]})
        return sum(1 for x in make_supercell(structure(name), st)
                   if x.specie.symbol == "Li")
    comparison = {}
    for t in MATERIALS["Li2O"]["temperatures"]:
        a = next(r for r in lgps["per_temperature"] if r["temperature"] == t) \
            if any(r["temperature"] == t for r in lgps["per_temperature"]) else None
        b = next(r for r in li2o["per_temperature"] if r["temperature"] == t)
        if a is None:
            continue
        sb = b["conductivity"] if b["measurable"] else b["conductivity_upper"]
        # Hops per Li per ps; with no hop seen, the 95 % Poisson bound (3 hops).
        rate_a = a["n_eff"] / (n_li(a) * a["production_ps"])
        hops_b = b["n_eff"] if b["n_eff"] >= 1 else 3.0
        rate_b = hops_b / (n_li(b) * b["production_ps"])
        comparison[f"{t:.0f} K"] = {
            "Li10GeP2S12_mS_cm": a["conductivity"],
            "Li2O_mS_cm": sb, "Li2O_is_upper_bound": not b["measurable"],
            "ratio": a["conductivity"] / sb if sb else None,
            "Li10GeP2S12_hops_per_Li_per_ps": rate_a,
            "Li2O_hops_per_Li_per_ps": rate_b,
            "Li2O_hops_is_95pc_bound": b["n_eff"] < 1,
            "hop_rate_ratio": rate_a / rate_b}
    doc = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores "
                   f"({args.workers} runs at a time, 1 thread each); no GPU",
        "potential": "CHGNet (chgnet wheel weights)",
        "settings": settings, "wall_seconds": wall,
        "results": results, "literature": LITERATURE, "same_temperature": comparison,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1))
    plot(results, OUT.with_suffix(".png"))
    for name, res in results.items():
        print(f"\n{name}: {res['status']}")
        for r in res["per_temperature"]:
            d = (f"D = {r['diffusivity']:.3g} ± {r['diffusivity_std'] or 0:.2g} cm2/s, "
                 f"sigma = {r['conductivity']:.3g} mS/cm" if r["measurable"] else
                 f"D < {r['diffusivity_upper']:.2g} cm2/s, sigma < "
                 f"{r['conductivity_upper']:.2g} mS/cm")
            print(f"  {r['temperature']:.0f} K ({r['n_atoms']} atoms, "
                  f"{r['production_ps']:.0f} ps, n_eff {r['n_eff']:.0f}): {d}")
        if res["status"] == "fit":
            lo, hi = res["conductivity_target_range"]
            print(f"  Ea = {res['activation_energy']:.3f} ± "
                  f"{res['activation_energy_std'] or 0:.3f} eV; sigma(300 K) = "
                  f"{res['conductivity_target']:.3g} mS/cm (1-sigma {lo:.2g}-{hi:.2g})")
        for kind, lit in LITERATURE[name].items():
            print(f"  {kind}: sigma(300 K) {lit.get('sigma_300K')} mS/cm, "
                  f"Ea {lit.get('Ea')} eV ({lit['source']})")
    for t, c in comparison.items():
        print(f"{t}: LGPS / Li2O conductivity ratio "
              f"{'≥' if c['Li2O_is_upper_bound'] else ''}{c['ratio']:.3g}; hops per Li "
              f"per ps {c['Li10GeP2S12_hops_per_Li_per_ps']:.3g} vs "
              f"{'<' if c['Li2O_hops_is_95pc_bound'] else ''}"
              f"{c['Li2O_hops_per_Li_per_ps']:.3g} (ratio "
              f"{'≥' if c['Li2O_hops_is_95pc_bound'] else ''}{c['hop_rate_ratio']:.3g})")
    print(f"\nwall {wall:.0f} s; wrote {OUT}")


if __name__ == "__main__":
    main()
