"""Which start gives the filter its best first round? Seeds, known materials, foundation.

The round-1 situation of ``benchmarks/discovery_efficiency.py`` (Li-Fe-O, the stable
ternary compositions held out, CHGNet oracle): round 0 runs through the campaign's own
Makers (the references within ``--window`` of their hull recomputed, plus the built-in
seeds); the generators then make the round-1 pool, of which ``--sample`` candidates
drawn uniformly at random are relaxed by the oracle (the truth). Ensembles from four
starts predict them as the filter would (unrelaxed structures, energy per atom):

* ``seeds``: trained from scratch on the round-0 frames of the seeds only (the filter
  before issue 10);
* ``references``: trained from scratch on every round-0 frame (recomputed references +
  seeds; the campaign's default);
* ``foundation``: ``filter.foundation_model`` — a MACE model first trained on other
  materials (``--foundation-structures`` structures of the mp20 set in
  ``../shared/data``, any elements, labelled by the oracle, with one rattled copy each),
  then fine-tuned on every round-0 frame;
* ``foundation_only``: that foundation model without fine-tuning;
* ``references_rattled``: from scratch on every round-0 frame plus oracle single points
  of one rattled, strained copy of each round-0 structure (off-equilibrium data of the
  campaign's own space, as relaxation trajectories from distorted starts would give).

Per start: MAE of the energy per atom and of the energy above the round-0 hull, the
Spearman correlation of predicted and true energy above hull, and how many of the
``--top`` best-ranked candidates (by the mean, κ = 0, and by the campaign's lower
confidence bound, κ = 1) lie within 50 meV/atom of the hull (and on it), against the
sample's base rate.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/filter_start.py

Writes ``benchmarks/results/filter_start.json``; exits 0 with a message when
``../shared/data`` (mp20) is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from discovery_efficiency import campaign_config, preload, prepare  # noqa: E402

MP20 = HERE.parents[1] / "shared" / "data" / "mp20" / "train.csv"
OUT = HERE / "results" / "filter_start.json"


def oracle_frames(structures, rng):
    """CHGNet (the oracle's model) single points of each structure and of one rattled,
    strained copy: energy, forces and stress as training frames."""
    from ase import Atoms, units
    from chgnet.model import CHGNet

    model = CHGNet.load(verbose=False)
    frames = []
    batch = []
    for s in structures:
        copy = s.copy()
        copy.apply_strain(rng.uniform(-0.03, 0.03, 3))
        copy.perturb(0.08)
        batch += [s, copy]
    for i in range(0, len(batch), 32):
        chunk = batch[i:i + 32]
        preds = model.predict_structure(chunk, task="efs", batch_size=32)
        for s, p in zip(chunk, preds, strict=True):
            atoms = Atoms(numbers=s.atomic_numbers, positions=s.cart_coords,
                          cell=s.lattice.matrix, pbc=True)
            atoms.info["REF_energy"] = float(p["e"]) * len(s)
            atoms.arrays["REF_forces"] = np.asarray(p["f"], dtype=float)
            # GPa → eV/Å^3, as chgnet's own ASE calculator does (ASE's sign)
            stress = np.asarray(p["s"], dtype=float) * units.GPa
            atoms.info["REF_stress"] = np.array(
                [stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2],
                 stress[0, 1]])
            frames.append(atoms)
    return frames


def mp20_structures(n, rng, max_sites=20):
    from pymatgen.core import Structure

    csv.field_size_limit(10**7)
    rows = list(csv.DictReader(MP20.open()))
    out = []
    for i in rng.permutation(len(rows)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(rows[i]["cif"], fmt="cif")
        if len(s) <= max_sites:
            out.append(s)
        if len(out) >= n:
            break
    return out


def metrics(energies, true_e, hull_e, top):
    """Errors and ranking quality of an ensemble's predictions (n_models, n)."""
    from scipy.stats import spearmanr

    pred = energies.mean(axis=0)
    std = energies.std(axis=0, ddof=1) if len(energies) > 1 else np.zeros_like(pred)
    pred_eh, true_eh = pred - hull_e, true_e - hull_e
    out = {
        "mae_energy": float(np.mean(np.abs(pred - true_e))),
        "mae_e_above_hull": float(np.mean(np.abs(pred_eh - true_eh))),
        "spearman_e_above_hull": float(spearmanr(pred_eh, true_eh).statistic),
    }
    for kappa in (0.0, 1.0):  # the mean, and the campaign's default LCB
        order = np.argsort(pred_eh - kappa * std, kind="stable")[:top]
        out[f"kappa{kappa:g}_top{top}_within_50meV"] = int(np.sum(true_eh[order] <= 0.05))
        out[f"kappa{kappa:g}_top{top}_on_hull"] = int(np.sum(true_eh[order] <= 5e-5))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--window", type=float, default=0.05)
    p.add_argument("--sample", type=int, default=48)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--foundation-structures", type=int, default=500)
    p.add_argument("--starts", default="seeds,references,foundation,foundation_only,"
                   "references_rattled", help="comma-separated starts to train")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if not MP20.is_file():
        print(f"skipped: {MP20} not found (../shared/data is not part of a clone)")
        return 0
    preload()
    warnings.filterwarnings("ignore")
    import torch
    from pymatgen.core import Structure

    from flywheel.makers.common import campaign_db
    from flywheel.makers.filter.core import load_models, predict_energies
    from flywheel.makers.generate.jobs import GenerateMaker
    from flywheel.makers.hull.engine import HullEngine
    from flywheel.makers.hull.jobs import HullMaker
    from flywheel.makers.relax import run
    from flywheel.makers.relax.jobs import RelaxMaker
    from flywheel.makers.seeds.jobs import SeedMaker
    from flywheel.makers.train.core import train_ensemble
    from flywheel.makers.train.jobs import gather_frames, train_settings

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    started = time.time()
    _, _, _, formulas, refs, server = prepare("start")
    work = refs.parent
    seconds = {}
    try:
        ns = argparse.Namespace(window=args.window, budget=8, audit_fraction=0.15,
                                epochs=args.epochs, warm_epochs=args.epochs, rounds=1)
        config = campaign_config("start", f"{server.uri}/start", refs, ns,
                                 "acquisition")
        db = campaign_db(config)
        t = time.perf_counter()
        seeds = SeedMaker().make.original(SeedMaker(), config)
        RelaxMaker().make.original(RelaxMaker(), config, 0, seeds.selected_ids, 0, 1)
        HullMaker().make.original(HullMaker(), config, 0)
        seconds["round0_oracle"] = time.perf_counter() - t
        r0 = list(db.materials.find(db.q(), {"material_id": 1, "formula": 1,
                                             "energy_per_atom": 1, "generator": 1}))
        hull = HullEngine([(m["material_id"], m["formula"], m["energy_per_atom"])
                           for m in r0])
        t = time.perf_counter()
        GenerateMaker().make.original(GenerateMaker(), config, 1)
        seconds["generate"] = time.perf_counter() - t
        pool = list(db.candidates.find(db.q(round=1), {"candidate_id": 1,
                                                        "structure": 1, "formula": 1,
                                                        "generator": 1}))
        pool = [pool[i] for i in sorted(rng.choice(len(pool), min(args.sample,
                                                                   len(pool)),
                                                   replace=False))]
        structures = [Structure.from_dict(c["structure"]) for c in pool]
        t = time.perf_counter()
        results = run.run_oracle(structures, config.oracle)
        seconds["sample_oracle"] = time.perf_counter() - t
        ok = [i for i, r in enumerate(results) if r.ok]
        structures = [structures[i] for i in ok]
        true_e = np.array([results[i].energy / len(results[i].structure) for i in ok])
        hull_e = np.array([hull.hull_energy(s.composition) for s in structures])
        true_eh = true_e - hull_e

        frames_all = gather_frames(db)
        seed_ids = {m["material_id"] for m in r0 if m["generator"] == "seed"}
        frames_seeds = []
        for f in db.find_files("frames"):
            if f["metadata"]["candidate_id"] in seed_ids:
                import io

                from ase.io import read

                frames_seeds += read(io.StringIO(db.get_file("frames", f["_id"])
                                                 .decode()), index=":",
                                     format="extxyz")
        settings = train_settings(config.filter.model, "cpu", 2)
        wanted = args.starts.split(",")
        starts = {}
        foundation_frames = []
        if {"foundation", "foundation_only"} & set(wanted):
            t = time.perf_counter()
            foundation_frames = oracle_frames(
                mp20_structures(args.foundation_structures, rng), rng)
            seconds["foundation_labels"] = time.perf_counter() - t
            t = time.perf_counter()
            starts["foundation_only"] = train_ensemble(
                foundation_frames, work / "pretrain", n_models=1, settings=settings,
                seeds=[7])
            seconds["foundation_train"] = time.perf_counter() - t
        rattled = []
        if "references_rattled" in wanted:
            r0_structures = [Structure.from_dict(m["structure"]) for m in
                             db.materials.find(db.q(round=0), {"structure": 1})]
            rattled = oracle_frames(r0_structures, rng)[1::2]  # the distorted copies
        for name, frames, warm in (
            ("seeds", frames_seeds, None),
            ("references", frames_all, None),
            ("foundation", frames_all, [starts.get("foundation_only", [None])[0]] * 2),
            ("references_rattled", frames_all + rattled, None),
        ):
            if name not in wanted:
                continue
            t = time.perf_counter()
            starts[name] = train_ensemble(frames, work / name, n_models=2,
                                          settings=settings, seeds=[0, 1],
                                          warm_start=warm)
            seconds[f"train_{name}"] = time.perf_counter() - t
        report = {}
        for name, paths in starts.items():
            report[name] = metrics(predict_energies(load_models(paths), structures),
                                   true_e, hull_e, args.top)
            print(name, report[name], flush=True)
        top = args.top
        result = {
            "benchmark": "filter_start",
            "machine": f"CPU: {platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cores, 1 torch thread per process",
            "settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in vars(args).items()},
            "held_out_formulas": formulas,
            "n_round0_frames": {"seeds": len(frames_seeds), "all": len(frames_all),
                                "foundation": len(foundation_frames),
                                "rattled": len(rattled)},
            "sample": {"n": len(ok), "base_rate_within_50meV":
                       float(np.mean(true_eh <= 0.05)),
                       "base_rate_on_hull": float(np.mean(true_eh <= 5e-5)),
                       f"random_top{top}_within_50meV_expected":
                       float(top * np.mean(true_eh <= 0.05)),
                       "generators": {g: sum(pool[i]["generator"] == g for i in ok)
                                      for g in {c["generator"] for c in pool}}},
            "starts": report,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "wall_seconds": round(time.time() - started, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
