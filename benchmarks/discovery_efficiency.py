"""Does the filter pick better than random? A held-out rediscovery campaign on MP data.

From the Materials Project's 375 Li-Fe-O entries (``examples/references``, CC-BY 4.0),
every entry of a composition whose ground state is a stable ternary phase on the
MP2020 hull is held out (LiFeO2, Li2FeO3 and Li5FeO4 with all their polymorphs); the
rest are the references (recomputed with the oracle, CHGNet, in round 0 within
``--window`` of their hull) and, with the built-in seeds, the starting data. Round 0
runs once; three arms then continue from copies of it with the same generators and the
same oracle budget per round:

(a) ``filter``: the campaign's default, acquisition within per-generator quotas, with
    its audit slice (``filter.audit_fraction``);
(b) ``random``: uniform random selection from the same kind of pool;
(c) ``random_per_generator``: random order within the filter's per-generator quotas
    and polymorph cap (what the budget split adds without the model's ranking).

Per round and arm: hit rate (on the hull of references + campaign at round close),
held-out phases rediscovered (an oracle result that matches a held-out structure),
held-out compositions reached (an on-hull result at a held-out composition), the
filter's MAE on its picks and on the audit picks, and the enrichments: hit rate of (a)
over (b), over (c), and over the audit slice of (a). Every arm trains its ensemble
(so (b) and (c) also report what a model trained on their data would predict).

Goal (issue 10): by round 3, (a) ≥ 3× (b) and ≥ 2× (c) in hit rate, and filter MAE ≤
60 meV/atom.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/discovery_efficiency.py [--rounds 4]

Writes ``benchmarks/results/discovery_efficiency.json`` and ``.png``. Machine: the
2-core CPU this project is developed on unless the JSON says otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
MP_FILE = ROOT / "examples" / "references" / "mp_Li-Fe-O_entries.json.gz"
RESULTS = ROOT / "benchmarks" / "results"
ARMS = {"a": "acquisition", "b": "random", "c": "random_per_generator"}


def preload() -> None:
    """Import every flywheel module now: a run takes an hour, and later rounds must
    run the code the first one ran even if the working tree changes meanwhile."""
    import importlib
    import pkgutil

    import flywheel

    for pkg in ("flywheel", "flywheel.makers", "flywheel.workflows", "flywheel.db"):
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}."):
            importlib.import_module(info.name)
    del flywheel


def held_out_split(entries: list) -> tuple[list, list, list[str]]:
    """(kept entries, held-out entries, held-out formulas): every entry of a
    composition whose lowest-energy entry is a ternary on the MP2020 hull."""
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    pd = PhaseDiagram(entries)
    formulas = sorted({e.composition.reduced_formula for e in pd.stable_entries
                       if len(e.composition.elements) == 3})
    held = [e for e in entries if e.composition.reduced_formula in formulas]
    kept = [e for e in entries if e.composition.reduced_formula not in formulas]
    return kept, held, formulas


def prepare(prefix: str):
    """The MP entries (MP2020), the held-out split, the references file in a new work
    folder and a started local database server on a free port in it."""
    import socket

    from monty.serialization import dumpfn, loadfn
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    from flywheel.db.server import LocalServer

    entries = MaterialsProject2020Compatibility().process_entries(loadfn(MP_FILE),
                                                                  clean=True)
    kept, held, formulas = held_out_split(entries)
    work = Path(tempfile.mkdtemp(prefix=f"flywheel-{prefix}-"))
    refs = work / "references.json.gz"
    dumpfn(kept, refs)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = LocalServer(data_dir=work / "db", port=port)
    server.start()
    return entries, kept, held, formulas, refs, server


def campaign_config(name: str, uri: str, refs: Path, args: argparse.Namespace,
                    selection: str):
    from flywheel.config import campaign_from_dict

    return campaign_from_dict({
        "name": name,
        "chemistry": {"elements": ["Li", "Fe", "O"], "max_elements": 3,
                      "max_sites": 16},
        "seeds": {"builtin": True, "max_seeds": 12},
        "hull": {"references": [str(refs)], "recompute_window": args.window},
        "generate": {"substitution": {"budget": 60}, "saps": {"budget": 60},
                     "prototypes": {"budget": 40}, "seed": 0},
        "filter": {"ensemble_size": 2, "budget": args.budget,
                   "audit_fraction": args.audit_fraction, "selection": selection,
                   "model": {"num_channels": 16, "r_max": 4.5,
                             "max_num_epochs": args.epochs,
                             "warm_start_epochs": args.warm_epochs}},
        "oracle": {"backend": "chgnet", "fmax": 0.1, "steps": 200, "max_frames": 8},
        "rounds": {"max_rounds": args.rounds},
        "database": {"uri": uri},
    })


def clone_campaign(db, source: str, target: str) -> None:
    """Copy a campaign's documents and GridFS files under another name."""
    import gridfs

    for coll in ("candidates", "materials", "rounds", "references"):
        docs = []
        for d in db[coll].find({"campaign": source}):
            d.pop("_id")
            d["campaign"] = target
            docs.append(d)
        if docs:
            db[coll].insert_many(docs)
    for bucket in ("frames", "models"):
        fs = gridfs.GridFSBucket(db, bucket_name=bucket)
        for f in db[f"{bucket}.files"].find({"metadata.campaign": source}):
            data = fs.open_download_stream(f["_id"]).read()
            meta = {**f["metadata"], "campaign": target}
            fs.upload_from_stream(f["filename"], data, metadata=meta)


def run_round(config, r: int) -> dict[str, Any]:
    """One round through the stage Makers, in this process (the campaign's code)."""
    from flywheel.makers.filter.jobs import FilterMaker
    from flywheel.makers.generate.jobs import GenerateMaker
    from flywheel.makers.hull.jobs import HullMaker
    from flywheel.makers.relax.jobs import RelaxMaker
    from flywheel.makers.seeds.jobs import SeedMaker
    from flywheel.makers.train.jobs import TrainMaker
    from flywheel.workflows.campaign import close_round
    from flywheel.workflows.round import RoundMaker

    t0 = time.perf_counter()
    times = {}
    if r == 0:
        maker = SeedMaker()
        gen = sel = maker.make.original(maker, config)
        ids = gen.selected_ids
    else:
        maker = GenerateMaker()
        gen = maker.make.original(maker, config, r)
        times["generate"] = time.perf_counter() - t0
        maker = FilterMaker()
        sel = maker.make.original(maker, config, r)
        ids = sel.selected_ids
    t1 = time.perf_counter()
    maker = RelaxMaker()
    maker.make.original(maker, config, r, ids, 0, 1)
    times["oracle"] = time.perf_counter() - t1
    maker = HullMaker()
    hull = maker.make.original(maker, config, r)
    t2 = time.perf_counter()
    maker = TrainMaker()
    trained = maker.make.original(maker, config, r)
    times["train"] = time.perf_counter() - t2
    summary = {"generated": gen, "selected": sel, "hull": hull, "trained": trained}
    response = close_round.original(config, r, RoundMaker(), summary)
    doc = response.output
    doc["seconds"] = {k: round(v, 1) for k, v in times.items()}
    doc["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    return doc


def rediscovered(db, campaign: str, held: list, formulas: list[str]) -> dict:
    """Held-out structures matched by the campaign's results; held-out compositions
    with an on-hull result."""
    from pymatgen.core import Structure

    from flywheel.makers.generate.dedup import match_structures

    mats = list(db.materials.find({"campaign": campaign, "formula": {"$in": formulas}},
                                  {"structure": 1, "stable": 1, "formula": 1,
                                   "round": 1}))
    structures = [Structure.from_dict(m["structure"]) for m in mats]
    hits = match_structures(structures, [e.structure for e in held], closest=True)
    phases = sorted({held[h].entry_id for h in hits if h is not None})
    on_hull = sorted({m["formula"] for m in mats if m.get("stable")})
    return {"phases": phases, "compositions_on_hull": on_hull,
            "results_at_held_out_compositions": len(mats)}


def summarise(rows: dict[str, list[dict]], goal_round: int) -> dict[str, Any]:
    """Per-round comparison of the arms and the verdict against the goal."""
    from flywheel.makers.hull.metrics import enrichment

    out = []
    for k in range(len(rows["a"])):
        a, b, c = rows["a"][k], rows["b"][k], rows["c"][k]

        def ratio(x, y):
            return enrichment(x["stable_found"], x["evaluated"], y["stable_found"],
                              y["evaluated"])

        def upto(arm):  # pooled rounds 1..k
            sel = rows[arm][1: k + 1]
            return {"stable_found": sum(s["stable_found"] for s in sel),
                    "evaluated": sum(s["evaluated"] for s in sel)}

        out.append({
            "round": a["round"],
            "a_over_b": ratio(a, b), "a_over_c": ratio(a, c),
            "a_over_own_audit": a.get("enrichment"),
            "cumulative_a_over_b": ratio(upto("a"), upto("b")) if k else None,
            "cumulative_a_over_c": ratio(upto("a"), upto("c")) if k else None,
            "cumulative_a_over_own_audit": a.get("enrichment_cumulative"),
        })
    g = next((row for row in out if row["round"] == goal_round), None)
    a_goal = next((r for r in rows["a"] if r["round"] == goal_round), None)
    verdict = None
    if g is not None and a_goal is not None:
        ab = (g["cumulative_a_over_b"] or {}).get("value")
        ac = (g["cumulative_a_over_c"] or {}).get("value")
        mae = (a_goal.get("picks") or {}).get("mae")
        verdict = {
            "round": goal_round,
            "cumulative_hit_rate_a_over_b": ab, "met_3x_random": ab is not None
            and ab >= 3,
            "cumulative_hit_rate_a_over_c": ac, "met_2x_quota_random": ac is not None
            and ac >= 2,
            "filter_mae_picks": mae, "met_mae_60meV": mae is not None and mae <= 0.060,
        }
    return {"per_round": out, "goal": verdict}


def plot(rows: dict[str, list[dict]], rediscovery: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"a": "(a) filter", "b": "(b) random", "c": "(c) random in quotas"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for arm, label in names.items():
        rr = [r for r in rows[arm] if r["round"] > 0]
        x = [r["round"] for r in rr]
        axes[0].plot(x, [r["hit_rate"] for r in rr], "o-", label=label)
        axes[1].plot(x, [len(rediscovery[arm][r["round"]]["phases"]) for r in rr],
                     "o-", label=label)
        axes[2].plot(x, [1000 * ((r.get("picks") or {}).get("mae") or float("nan"))
                         for r in rr], "o-", label=label)
    a_audit = [r for r in rows["a"] if r["round"] > 0]
    axes[0].plot([r["round"] for r in a_audit], [r.get("base_rate") for r in a_audit],
                 "k:", label="(a) audit base rate")
    axes[0].set(xlabel="round", ylabel="hit rate", title="hit rate (on hull)")
    axes[1].set(xlabel="round", ylabel="phases", title="held-out phases rediscovered")
    axes[2].axhline(60, color="grey", lw=0.8)
    axes[2].set(xlabel="round", ylabel="meV/atom", title="filter MAE on its picks")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--budget", type=int, default=12)
    p.add_argument("--audit-fraction", type=float, default=0.15)
    p.add_argument("--window", type=float, default=0.1,
                   help="hull.recompute_window (eV/atom)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--warm-epochs", type=int, default=8)
    p.add_argument("--out", type=Path, default=RESULTS / "discovery_efficiency.json")
    args = p.parse_args(argv)
    preload()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    import torch

    from flywheel.db.stores import get_database

    torch.set_num_threads(1)
    entries, kept, held, formulas, refs, server = prepare("discovery")
    print(f"held out {len(held)} entries of {formulas}; {len(kept)} references",
          flush=True)
    started = time.time()
    try:
        uri = f"{server.uri}/discovery"
        db = get_database(uri)
        base = campaign_config("r0", uri, refs, args, "acquisition")
        r0 = run_round(base, 0)
        print(f"round 0: {r0['evaluated']} relaxed, {r0['stable_found']} on the hull, "
              f"{r0['seconds']}", flush=True)
        rows = {arm: [copy.deepcopy(r0)] for arm in ARMS}
        found = {arm: {} for arm in ARMS}
        configs = {}
        for arm, selection in ARMS.items():
            clone_campaign(db, "r0", arm)
            configs[arm] = campaign_config(arm, uri, refs, args, selection)
        for r in range(1, args.rounds + 1):
            for arm in ARMS:
                doc = run_round(configs[arm], r)
                found[arm][r] = rediscovered(db, arm, held, formulas)
                rows[arm].append(doc)
                e = doc.get("enrichment") or {}
                print(f"round {r} arm {arm}: hit rate {doc['hit_rate']}, picks "
                      f"{(doc.get('picks') or {}).get('hits')}/"
                      f"{(doc.get('picks') or {}).get('n')}, audit "
                      f"{(doc.get('audit') or {}).get('hits')}/"
                      f"{(doc.get('audit') or {}).get('n')}, MAE "
                      f"{(doc.get('picks') or {}).get('mae')}, enrichment "
                      f"{e.get('value')}, held-out found "
                      f"{found[arm][r]['phases']}, {doc['seconds']}", flush=True)
        keep = ("round", "selection", "evaluated", "failed", "stable_found",
                "hit_rate", "n_new", "n_known", "audit", "picks", "base_rate",
                "enrichment", "enrichment_cumulative", "filter_mae", "calibration",
                "unique", "unscorable", "n_frames", "seconds")
        result = {
            "benchmark": "discovery_efficiency",
            "machine": f"CPU: {platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cores, 1 torch thread per process",
            "python": sys.version.split()[0],
            "data": f"{MP_FILE.name}: {len(entries)} MP entries (CC-BY 4.0)",
            "held_out_formulas": formulas,
            "held_out_entries": sorted(e.entry_id for e in held),
            "held_out_ground_states": sorted(
                min((e for e in held if e.composition.reduced_formula == f),
                    key=lambda e: e.energy_per_atom).entry_id for f in formulas),
            "settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in vars(args).items()},
            "config_a": json.loads(configs["a"].model_dump_json()),
            "arms": {arm: [{k: row.get(k) for k in keep} for row in rows[arm]]
                     for arm in ARMS},
            "rediscovered": {arm: {str(r): v for r, v in found[arm].items()}
                             for arm in ARMS},
            "comparison": summarise(rows, goal_round=min(3, args.rounds)),
            "wall_seconds": round(time.time() - started, 1),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
        plot(rows, found, args.out.with_suffix(".png"))
        print(json.dumps(result["comparison"]["goal"], indent=1))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
