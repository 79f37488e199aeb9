"""Throughput of the candidate generators and of fast deduplication (one core).

Sections, all in one run:

* ``generators``: candidates per second of substitution, SAPS, prototype
  enumeration, RSS, and compositions per second of the composition enumeration.
* ``dedup_1e5``: :func:`flywheel.makers.generate.dedup.fast_dedup` on a stream of
  100,000 candidates drawn from a few hundred distinct *bases* (decorated AFLOW
  prototypes, SAPS children and random RSS crystals, made distinct with
  ``core.dedup``).  Each candidate is a random base transformed by one of:
  identical copy, rotation + translation, site permutation + volume scaling (±5 %),
  supercell (up to 2x2x1) + rotation, or (``--perturbed`` fraction, default 2 %)
  random 0.01 Å displacements of every atom (same crystal, but not isometric: these
  need StructureMatcher).  The candidates are built on the fly from arrays (the
  stream is a generator; the building time is measured separately and subtracted).
  Ground truth: the number of distinct bases drawn.
* ``subset``: a 1,000-candidate stream of the same recipe, deduplicated by
  ``StructureMatcher.group_structures`` (all pairs within a composition, the
  baseline), ``core.dedup``, ``fast_dedup`` and ``fast_dedup(level="formula")``;
  the speed-up is baseline / fast (CPU seconds).
* ``bucket_split_risk``: how often a pair StructureMatcher matches lands in two
  different buckets (a missed duplicate), for four bucket keys (formula + space
  group + Wyckoff letters, + orbit sizes (the default), + space group only), on
  (a) bases vs copies with every atom displaced by 0.01-0.2 Å, or the cell
  strained by up to 0.5-3 % along each axis, and (b)
  same-formula pairs of real MP structures in ``../shared/data`` (if present).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/generation.py [--n 100000] [--quick]

Prints a summary and writes ``benchmarks/results/generation.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from pymatgen.core import Structure

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
logger = logging.getLogger("generation")
ELEMENTS = ["Li", "Fe", "O"]


class _Clock:
    """Wall and CPU seconds since creation (CPU time is robust to a loaded machine)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _timed(fn, *args, **kwargs):
    clock = _Clock()
    out = fn(*args, **kwargs)
    return out, clock.read()


def _rate(n: int, seconds: tuple[float, float]) -> dict:
    wall, cpu = seconds
    return {"n": n, "seconds_wall": round(wall, 3), "seconds_cpu": round(cpu, 3),
            "per_second_cpu": round(n / cpu, 2) if cpu > 0 else None}


# ------------------------------------------------------------------ generators
def bench_generators(quick: bool) -> tuple[dict, list]:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from flywheel.makers.generate.compositions import enumerate_compositions
    from flywheel.makers.generate.core import substitution_candidates
    from flywheel.makers.generate.prototypes import prototype_candidates
    from flywheel.makers.generate.rss import random_structures
    from flywheel.makers.generate.saps import saps_candidates
    from flywheel.makers.seeds.core import builtin_seeds

    out: dict = {}
    seeds = builtin_seeds(ELEMENTS, max_seeds=40 if quick else 80)
    parents = [(f"seed{i}", s.structure) for i, s in enumerate(seeds)]
    allowed = ["Li", "Na", "K", "Fe", "Mn", "Co", "Ni", "O", "S", "F"]
    subs, dt = _timed(substitution_candidates, parents, allowed)
    out["substitution"] = {**_rate(len(subs), dt), "parents": len(parents),
                           "allowed": allowed}

    # SAPS needs several sites per orbit: the seeds' conventional cells too.
    conventional = []
    for pid, s in parents:
        conv = SpacegroupAnalyzer(s, symprec=0.01).get_conventional_standard_structure()
        if len(conv) > len(s) and len(conv) <= 24:
            conventional.append((pid + "-conv", conv))
    saps_parents = parents + conventional
    saps, dt = _timed(saps_candidates, saps_parents, None, [*ELEMENTS, "Mn", "F"])
    out["saps"] = {**_rate(len(saps), dt), "parents": len(saps_parents),
                   "allowed": [*ELEMENTS, "Mn", "F"], "threshold": 5e-3}

    protos, dt = _timed(prototype_candidates, [*ELEMENTS, "Mn"], max_elements=3,
                        max_sites=20)
    out["prototypes"] = {**_rate(len(protos), dt), "elements": [*ELEMENTS, "Mn"],
                         "max_elements": 3, "max_sites": 20}

    n_rss = 20 if quick else 60
    rss = []
    clock = _Clock()
    for formula in ("Li2FeO3", "LiFeO2", "Fe2O3"):
        rss += random_structures(formula, n=n_rss, seed=0, max_atoms=20)
    out["rss"] = {**_rate(len(rss), clock.read()),
                  "compositions": ["Li2FeO3", "LiFeO2", "Fe2O3"], "max_atoms": 20,
                  "note": "includes ~2 s once per process for pyxtal Group tables"}

    comps, dt = _timed(enumerate_compositions, ["Li", "Fe", "Mn", "O", "F"],
                       max_elements=4, max_atoms=12)
    out["compositions"] = {**_rate(len(comps), dt),
                           "elements": ["Li", "Fe", "Mn", "O", "F"],
                           "max_elements": 4, "max_atoms": 12, "rule": "relaxed"}
    return out, [*protos, *saps, *rss]


# ------------------------------------------------------------------ the stream
def _bases(pool: Sequence, max_sites: int, max_pool: int) -> list[Structure]:
    """Distinct small structures (core.dedup as the reference)."""
    from flywheel.makers.generate.core import dedup

    small = [c for c in pool if len(c.structure) <= max_sites]
    if len(small) > max_pool:  # core.dedup of the pool is the slow part
        keep = np.random.default_rng(0).choice(len(small), max_pool, replace=False)
        small = [small[i] for i in sorted(keep)]
    unique, _, _ = dedup(small)
    return [c.structure for c in unique]


def _collisions(bases: Sequence[Structure]) -> list[dict]:
    """Bases (distinct for core.dedup) that nevertheless share an isometry key."""
    from flywheel.makers.generate.dedup import fingerprint, isometry_key

    by_key: dict[bytes, list[int]] = defaultdict(list)
    for i, b in enumerate(bases):
        by_key[isometry_key(b)].append(i)
    return [{"bases": group, "formula": bases[group[0]].composition.reduced_formula,
             "space_groups": [fingerprint(bases[i], symprec=0.01)[1] for i in group]}
            for group in by_key.values() if len(group) > 1]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


KINDS = ("identical", "rotate+translate", "permute+scale", "supercell+rotate",
         "perturb")


def _stream(bases: Sequence[Structure], n: int, seed: int, perturbed: float,
            record: list[int] | None = None) -> Iterator:
    """Yield ``n`` candidates, each a transformed copy of a random base."""
    from pymatgen.core import Structure

    from flywheel.makers.generate.core import Candidate

    rng = np.random.default_rng(seed)
    arrays = [(b.lattice.matrix.copy(), [sp.symbol for sp in b.species],
               b.frac_coords.copy()) for b in bases]
    p_other = (1 - perturbed) / 4
    probs = [p_other] * 4 + [perturbed]
    for _ in range(n):
        b = int(rng.integers(len(bases)))
        if record is not None:
            record.append(b)
        lattice, species, frac = arrays[b]
        kind = KINDS[int(rng.choice(5, p=probs))]
        if kind == "rotate+translate":
            lattice = lattice @ _random_rotation(rng).T
            frac = frac + rng.random(3)
        elif kind == "permute+scale":
            order = rng.permutation(len(species))
            species, frac = [species[i] for i in order], frac[order]
            lattice = lattice * rng.uniform(0.95, 1.05)
        elif kind == "supercell+rotate":
            reps = np.array([1, 1, 1])
            reps[int(rng.integers(3))] = 2
            if rng.random() < 0.5:
                reps[int(rng.integers(3))] = 2
            shifts = np.array(list(itertools.product(*(range(r) for r in reps))))
            frac = ((frac[None, :, :] + shifts[:, None, :]) / reps).reshape(-1, 3)
            species = species * len(shifts)
            lattice = (lattice * reps[:, None]) @ _random_rotation(rng).T
        elif kind == "perturb":
            step = rng.normal(size=frac.shape)
            step *= 0.01 / np.linalg.norm(step, axis=1, keepdims=True)
            frac = frac + step @ np.linalg.inv(lattice)
        yield Candidate(structure=Structure(lattice, species, frac),
                        generator=kind, parent_id=str(b))


def bench_dedup(bases: list, n: int, perturbed: float) -> dict:
    from flywheel.makers.generate.dedup import fast_dedup

    drawn: list[int] = []
    kinds: dict[str, int] = defaultdict(int)
    clock = _Clock()
    for cand in _stream(bases, n, 7, perturbed, record=drawn):
        kinds[cand.generator] += 1
    build = clock.read()
    (unique, n_batch, _), total = _timed(fast_dedup, _stream(bases, n, 7,
                                                                   perturbed))
    expected = len(set(drawn))
    wall, cpu = (total[0] - build[0], total[1] - build[1])
    return {"n": len(drawn), "bases": len(bases), "distinct_bases_drawn": expected,
            "kinds": dict(kinds), "unique": len(unique),
            "duplicates_within_batch": n_batch, **_coverage(unique, set(drawn)),
            "seconds_wall_total": round(total[0], 2),
            "seconds_wall_building": round(build[0], 2),
            "seconds_wall_dedup": round(wall, 2),
            "seconds_cpu_dedup": round(cpu, 2),
            "per_second_cpu_dedup": round(len(drawn) / cpu, 1),
            "goal_seconds": 60, "met_goal_cpu": cpu < 60, "met_goal_wall": wall < 60}


def _coverage(unique: Sequence, drawn: set[int]) -> dict:
    """Compare unique candidates with the bases they came from (parent_id)."""
    represented = {int(c.parent_id) for c in unique}
    return {"bases_represented": len(represented),
            "bases_lost": sorted(drawn - represented),
            "extra_copies_kept": len(unique) - len(represented),
            "correct": represented == drawn and len(unique) == len(drawn)}


def bench_subset(bases: list, n: int, perturbed: float) -> dict:
    from flywheel.makers.generate.core import dedup, default_matcher
    from flywheel.makers.generate.dedup import fast_dedup

    drawn: list[int] = []
    batch = list(_stream(bases, n, 11, perturbed, record=drawn))
    structures = [c.structure for c in batch]
    groups, t_group = _timed(default_matcher().group_structures, structures)
    (u_core, *_), t_core = _timed(dedup, batch)
    (u_fast, *_), t_fast = _timed(fast_dedup, batch)
    (u_formula, *_), t_formula = _timed(fast_dedup, batch, level="formula")
    def _row(unique: list | int, t: tuple[float, float]) -> dict:
        row = {"seconds_wall": round(t[0], 2), "seconds_cpu": round(t[1], 2)}
        if isinstance(unique, int):
            return {"unique": unique, **row}
        return {"unique": len(unique), **_coverage(unique, set(drawn)), **row}

    return {
        "n": n, "distinct_bases_drawn": len(set(drawn)),
        "group_structures": _row(len(groups), t_group),
        "core_dedup": _row(u_core, t_core),
        "fast_dedup": _row(u_fast, t_fast),
        "fast_dedup_level_formula": _row(u_formula, t_formula),
        "speedup_cpu_vs_group_structures": round(t_group[1] / t_fast[1], 1),
        "speedup_cpu_vs_core_dedup": round(t_core[1] / t_fast[1], 1),
    }


# ------------------------------------------------------------- bucket split risk
def _keys(structure: Structure) -> dict[str, tuple]:
    import spglib

    from flywheel.makers.generate.dedup import fingerprint

    orbits = fingerprint(structure)
    z = [sp.Z for sp in structure.species]
    data = spglib.get_symmetry_dataset(
        (structure.lattice.matrix, structure.frac_coords, z), symprec=0.1)
    letters = () if data is None else tuple(sorted(
        (z[i], data.wyckoffs[i]) for i in set(data.crystallographic_orbits.tolist())))
    return {"formula+sg+wyckoff_letters": (*orbits[:2], letters),
            "formula+sg+orbit_sizes": orbits, "formula+sg": orbits[:2]}


def _split_counts(pairs: Sequence[tuple[Structure, Structure]]) -> dict:
    from flywheel.makers.generate.core import default_matcher

    matcher = default_matcher()
    matched = 0
    split: dict[str, int] = defaultdict(int)
    for a, b in pairs:
        if not matcher.fit(a, b):
            continue
        matched += 1
        ka, kb = _keys(a), _keys(b)
        for level in ka:
            split[level] += ka[level] != kb[level]
    return {"pairs": len(pairs), "matched": matched,
            **{f"split_{k}": v for k, v in split.items()},
            **{f"split_rate_{k}": round(v / matched, 4) if matched else None
               for k, v in split.items()}}


def bench_split_risk(bases: list, quick: bool) -> dict:
    rng = np.random.default_rng(3)
    sample = [bases[i] for i in rng.choice(len(bases), min(len(bases), 60 if quick
                                                             else 150), replace=False)]
    out: dict = {"synthetic": {}}
    for amplitude in (0.01, 0.05, 0.1, 0.2):
        pairs = []
        for s in sample:
            copy = s.copy()
            copy.perturb(amplitude)  # every atom moved by exactly `amplitude` Å
            pairs.append((s, copy))
        out["synthetic"][f"displaced {amplitude:g} A"] = _split_counts(pairs)
    for strain in (0.005, 0.01, 0.03):
        pairs = []
        for s in sample:
            copy = s.copy()
            copy.apply_strain(rng.uniform(-strain, strain, 3))
            pairs.append((s, copy))
        out["synthetic"][f"strained <= {strain:g}"] = _split_counts(pairs)
    if not SHARED.is_dir():
        out["real"] = "skipped: ../shared/data absent"
        return out
    out["real"] = _real_pairs(quick)
    return out


def _real_pairs(quick: bool) -> dict:
    import csv

    from monty.serialization import loadfn
    from pymatgen.core import Structure

    structures = [e.structure for e in loadfn(SHARED / "mp_Li-Fe-O_entries.json.gz")]
    for name in ("train", "val", "test"):
        with open(SHARED / "mp20" / f"{name}.csv") as handle:
            for row in csv.DictReader(handle):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    structures.append(Structure.from_str(row["cif"], fmt="cif"))
    by_formula = defaultdict(list)
    for s in structures:
        if len(s) <= 40:
            by_formula[s.composition.reduced_formula].append(s)
    pairs = [p for group in by_formula.values()
             for p in itertools.combinations(group, 2)]
    cap = 300 if quick else 1500
    if len(pairs) > cap:
        rng = np.random.default_rng(5)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), cap, replace=False))]
    result = _split_counts(pairs)
    result["note"] = (f"same-formula pairs of MP Li-Fe-O entries and mp20 structures "
                      f"with <= 40 sites, {cap} sampled at most")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--subset", type=int, default=1_000)
    parser.add_argument("--perturbed", type=float, default=0.02)
    parser.add_argument("--quick", action="store_true", help="smaller everything")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    n = 10_000 if args.quick and args.n == 100_000 else args.n

    result: dict = {"benchmark": "generation", "python": platform.python_version(),
                    "cpu": platform.machine(), "cores_used": 1,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    clock = _Clock()
    result["generators"], pool = bench_generators(args.quick)
    print(json.dumps(result["generators"], indent=1))
    max_pool = 300 if args.quick else 800
    bases, t_bases = _timed(_bases, pool, 16, max_pool)
    result["bases"] = {"n": len(bases), "seconds_cpu_core_dedup": round(t_bases[1], 1),
                       "from": f"a seeded sample of {max_pool} of the prototype, SAPS "
                               "and RSS candidates above with <= 16 sites, made "
                               "distinct with core.dedup"}
    result["bases"]["isometry_key_collisions"] = _collisions(bases)
    print("bases", result["bases"])
    result["subset"] = bench_subset(bases, args.subset, args.perturbed)
    print("subset", json.dumps(result["subset"], indent=1))
    result["dedup_1e5"] = bench_dedup(bases, n, args.perturbed)
    print("dedup", json.dumps(result["dedup_1e5"], indent=1))
    result["bucket_split_risk"] = bench_split_risk(bases, args.quick)
    print("split risk", json.dumps(result["bucket_split_risk"], indent=1))
    result["seconds_wall_total"], result["seconds_cpu_total"] = (
        round(t, 1) for t in clock.read())
    result["load_average_at_end"] = os.getloadavg()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
