"""Rediscovery: how many held-out known structures the generators reproduce.

For each data set (MP Li-Fe-O entries; mp20, both in ``../shared/data``), 20 % of
the structures (seeded) are held out; the rest are "known".  A random subsample of
the held-out structures (``--targets`` per data set, at most ``--max-sites`` sites)
are the targets.  For each target T every generator runs on the known structures
with ``allowed_elements`` = T's elements, and T counts as rediscovered by a
generator if one of its candidates with T's reduced formula matches T
(``core.default_matcher``: StructureMatcher with volume scaling).

Parents are pruned per target without changing the answer:

* substitution keeps the anonymous formula of its parent, so only known structures
  with T's anonymous formula are parents (at most ``--max-parents``, smallest
  first, <= 40 sites);
* SAPS keeps every parent element and adds at most one, so parents have elements
  within T's and at least all but one of them (at most ``--max-parents``, <= 24
  sites);
* prototypes are decorated with T's elements, prototypes with as many elements as
  T only (<= 20 sites);
* RSS draws ``--rss-n`` random crystals of T's composition with at most as many
  atoms as T's primitive cell (unrelaxed: a match needs luck or a tiny cell).

"already_known" counts targets matched by a known structure (duplicates in the
data, e.g. GGA and GGA+U entries of one material).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/rediscovery.py [--targets 40]

Writes ``benchmarks/results/rediscovery.json``; exits 0 with a message if
``../shared/data`` is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pymatgen.core import Structure

RESULTS = Path(__file__).resolve().parent / "results" / "rediscovery.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GENERATORS = ("substitution", "saps", "prototypes", "rss")


def _load(name: str) -> list[tuple[str, Structure]]:
    from monty.serialization import loadfn
    from pymatgen.core import Structure

    if name == "Li-Fe-O":
        entries = loadfn(SHARED / "mp_Li-Fe-O_entries.json.gz")
        return [(str(e.entry_id), e.structure) for e in entries]
    out = []
    for part in ("train", "val", "test"):
        with open(SHARED / "mp20" / f"{part}.csv") as handle:
            for row in csv.DictReader(handle):
                out.append((row["material_id"],
                            Structure.from_str(row["cif"], fmt="cif")))
    return out


def _elements(structure: Structure) -> frozenset[str]:
    return frozenset(el.symbol for el in structure.composition.elements)


def _formula(structure: Structure) -> str:
    return structure.composition.reduced_formula


def _run_dataset(name: str, args: argparse.Namespace) -> dict:
    from flywheel.makers.generate.core import default_matcher, substitution_candidates
    from flywheel.makers.generate.prototypes import prototype_candidates
    from flywheel.makers.generate.rss import random_structures
    from flywheel.makers.generate.saps import saps_candidates

    data = _load(name)
    rng = np.random.default_rng(args.seed)
    n_held = round(0.2 * len(data))
    held = set(rng.choice(len(data), size=n_held, replace=False).tolist())
    known = [data[i] for i in range(len(data)) if i not in held]
    eligible = sorted(i for i in held if len(data[i][1]) <= args.max_sites)
    picked = sorted(rng.choice(eligible, size=min(args.targets, len(eligible)),
                               replace=False).tolist())
    targets = [data[i] for i in picked]
    matcher = default_matcher()
    by_anonymous: dict[str, list] = defaultdict(list)
    for pid, s in known:
        by_anonymous[s.composition.anonymized_formula].append((pid, s))
    prototype_cache: dict[frozenset, list] = {}

    def _prototypes(els: frozenset[str]) -> list:
        if els not in prototype_cache:
            prototype_cache[els] = prototype_candidates(
                els, max_elements=len(els), min_elements=len(els), max_sites=20)
        return prototype_cache[els]

    def _generate(gen: str, target: Structure, els: frozenset[str]) -> list:
        if gen == "substitution":
            parents = sorted(by_anonymous[target.composition.anonymized_formula],
                             key=lambda p: len(p[1]))[:args.max_parents]
            return substitution_candidates(parents, els, max_sites=40)
        if gen == "saps":
            parents = sorted(((pid, s) for pid, s in known
                              if _elements(s) <= els and len(s) <= 24
                              and len(_elements(s)) >= len(els) - 1),
                             key=lambda p: len(p[1]))
            return saps_candidates(parents[:args.max_parents], None, els, max_sites=24)
        if len(els) < 2 and gen == "prototypes":
            return []  # elements are the seeds' job
        if gen == "prototypes":
            return _prototypes(els)
        n_prim = len(target.get_primitive_structure())
        return random_structures(target.composition, n=args.rss_n, seed=args.seed,
                                 max_atoms=n_prim)

    stats = {g: {"rediscovered": 0, "candidates": 0, "seconds_cpu": 0.0}
             for g in GENERATORS}
    already, any_gen, rows = 0, 0, []
    for tid, target in targets:
        els = _elements(target)
        formula = _formula(target)
        same = [s for _, s in known if _formula(s) == formula]
        is_known = any(matcher.fit(target, s) for s in same)
        already += is_known
        hits = []
        for gen in GENERATORS:
            t0 = time.process_time()
            cands = _generate(gen, target, els)
            hit = any(matcher.fit(target, c.structure) for c in cands
                      if c.formula == formula)
            stats[gen]["seconds_cpu"] += time.process_time() - t0
            stats[gen]["candidates"] += len(cands)
            stats[gen]["rediscovered"] += hit
            if hit:
                hits.append(gen)
        any_gen += bool(hits)
        rows.append({"id": tid, "formula": formula, "sites": len(target),
                     "already_known": is_known, "rediscovered_by": hits})
        print(f"{name} {tid} {formula}: {hits or '-'}", flush=True)
    n = len(targets)
    for gen in GENERATORS:
        stats[gen]["fraction"] = round(stats[gen]["rediscovered"] / n, 3) if n else None
        stats[gen]["seconds_cpu"] = round(stats[gen]["seconds_cpu"], 1)
    return {"structures": len(data), "held_out": len(held), "known": len(known),
            "held_out_eligible": len(eligible), "targets": n,
            "subsampled": n < len(held),
            "already_known": already, "any_generator": any_gen,
            "any_generator_fraction": round(any_gen / n, 3) if n else None,
            "per_generator": stats, "per_target": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=40,
                        help="held-out targets per data set (random subsample)")
    parser.add_argument("--max-sites", type=int, default=24)
    parser.add_argument("--max-parents", type=int, default=30)
    parser.add_argument("--rss-n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", nargs="+", default=["Li-Fe-O", "mp20"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"rediscovery: skipped, reference data not found at {SHARED}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    result: dict = {"benchmark": "rediscovery", "settings": vars(args) | {
        "output": str(args.output)}, "hold_out_fraction": 0.2,
        "matcher": "core.default_matcher (ltol 0.2, stol 0.3, angle 5, scale)",
        "notes": __doc__.split("Usage::")[0].strip()}
    for name in args.datasets:
        result[name] = _run_dataset(name, args)
        summary = {g: v["fraction"] for g, v in result[name]["per_generator"].items()}
        print(name, summary, "any:", result[name]["any_generator_fraction"])
    result["seconds_wall_total"] = round(time.perf_counter() - t0, 1)
    result["seconds_cpu_total"] = round(time.process_time(), 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
