"""Hull engine at Materials Project scale (85,014 Bartel et al. formation energies).

Builds the hull of every composition in ``bartel2020/mp_formation_energy_per_atom.json``
(elements at 0 eV/atom) with :class:`flywheel.makers.hull.engine.HullEngine`, checks a
random sample against exact per-chemical-system pymatgen ``PhaseDiagram``s, times an
incremental update of 1,000 new entries against a full rebuild, and (unless
``--skip-patched``) times pymatgen's ``PatchedPhaseDiagram`` of the same entries in a
child process. Prints the numbers and writes ``benchmarks/results/hull_scale.json``.
Exits 0 with a message when the shared data is absent.

Usage::

    python benchmarks/hull_scale.py --skip-patched            # ~2 min
    python benchmarks/hull_scale.py --methods auto,lp,qhull   # + ~17 min of pymatgen
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing as mp
import os
import platform
import queue as queue_lib
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger("hull_scale")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bartel2020"
OUT = Path(__file__).resolve().parent / "results" / "hull_scale.json"
STABLE_TOL = 5e-5


class Timer:
    """Wall and CPU seconds of a block (the machine is shared: CPU time is steadier)."""

    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}wall_s": round(self.wall, 3),
                f"{prefix}cpu_s": round(self.cpu, 3)}


def _chemsys(amounts: dict[str, float]) -> tuple[str, ...]:
    return tuple(sorted(amounts))


def _same_composition(a: dict[str, float], b: dict[str, float]) -> bool:
    ta, tb = sum(a.values()), sum(b.values())
    return set(a) == set(b) and all(abs(a[el] / ta - b[el] / tb) <= 1e-8 for el in a)


def _differs(a: Any, b: Any, atol: float = 1e-12) -> bool:
    """Records differ beyond float noise (the engine's own change criterion)."""
    return a.stable != b.stable or any(
        abs(getattr(a, f) - getattr(b, f)) > atol
        for f in ("e_above_hull", "decomposition_energy", "hull_energy"))


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest |Δ| of e_above_hull and decomposition energy over b's ids."""
    return max(max(abs(a[k].e_above_hull - r.e_above_hull),
                   abs(a[k].decomposition_energy - r.decomposition_energy))
               for k, r in b.items())


def _pd_entry(name: str, amounts: dict[str, float], e_per_atom: float):
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition

    return PDEntry(Composition(amounts), e_per_atom * sum(amounts.values()), name=name)


def pymatgen_sample_check(
    parsed: dict[str, dict[str, float]],
    energies: dict[str, float],
    results: dict[str, Any],
    sample: Sequence[str],
) -> dict[str, Any]:
    """Engine vs exact pymatgen PhaseDiagrams of each sampled entry's chemical system.

    The decomposition energy of a stable entry is checked against the hull of the
    system's other compositions (``PhaseDiagram.get_hull_energy_per_atom``), and also
    reported against ``get_phase_separation_energy`` with its default SLSQP settings.
    """
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    by_chemsys: dict[tuple[str, ...], list[str]] = {}
    for key, amounts in parsed.items():
        by_chemsys.setdefault(_chemsys(amounts), []).append(key)
    d_ehull, d_decomp, d_slsqp, n_stable, per_k = [], [], [], 0, {}
    with Timer() as t:
        for key in sample:
            space = _chemsys(parsed[key])
            names = [k for r in range(1, len(space) + 1)
                     for sub in itertools.combinations(space, r)
                     for k in by_chemsys.get(sub, [])]
            refs = [_pd_entry(f"ref_{el}", {el: 1}, 0.0) for el in space]
            entries = {k: _pd_entry(k, parsed[k], energies[k]) for k in names}
            pd = PhaseDiagram([*entries.values(), *refs])
            entry = entries[key]
            e_hull = float(pd.get_e_above_hull(entry))
            decomp = e_hull
            if e_hull <= STABLE_TOL:
                n_stable += 1
                others = [e for k, e in entries.items()
                          if not _same_composition(parsed[k], parsed[key])]
                hull = PhaseDiagram([*others, *refs]).get_hull_energy_per_atom(
                    entry.composition)
                decomp = entry.energy_per_atom - hull
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    slsqp = float(pd.get_phase_separation_energy(entry))
                d_slsqp.append(abs(slsqp - decomp))
            rec = results[key]
            d_ehull.append(abs(rec.e_above_hull - e_hull))
            d_decomp.append(abs(rec.decomposition_energy - decomp))
            per_k[len(space)] = per_k.get(len(space), 0) + 1
    return {
        "sample_size": len(sample),
        "sample_by_n_elements": dict(sorted(per_k.items())),
        "stable_in_sample": n_stable,
        "max_abs_diff_e_above_hull": max(d_ehull),
        "max_abs_diff_decomposition_energy": max(d_decomp),
        "agrees_within_1e-6": max(d_ehull + d_decomp) <= 1e-6,
        "pymatgen_slsqp_phase_separation_max_abs_diff_from_exact": max(
            d_slsqp, default=0.0),
        "pymatgen_reference": t.as_dict(),
    }


def _patched_child(raw: dict[str, float], sample: list[str], queue: mp.Queue) -> None:
    from pymatgen.analysis.phase_diagram import PatchedPhaseDiagram

    from flywheel.makers.hull.engine import parse_composition

    parsed = {k: parse_composition(k) for k in raw}
    entries = {k: _pd_entry(k, parsed[k], v) for k, v in raw.items()}
    els = sorted({el for a in parsed.values() for el in a})
    refs = [_pd_entry(f"ref_{el}", {el: 1}, 0.0) for el in els]
    with Timer() as build:
        ppd = PatchedPhaseDiagram([*entries.values(), *refs])
    with Timer() as look, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e_hull = {k: float(ppd.get_e_above_hull(entries[k])) for k in sample}
    # compositions without a covering sub-diagram fall back to SLSQP, with a warning
    fallbacks = sum("No suitable PhaseDiagrams" in str(w.message) for w in caught)
    queue.put({"build": build.as_dict(), "lookup": look.as_dict(),
               "n_spaces": len(ppd.spaces), "sample_slsqp_fallbacks": fallbacks,
               "e_above_hull": e_hull})


def patched_phase_diagram(
    raw: dict[str, float], sample: list[str], timeout: float
) -> dict[str, Any]:
    """Time pymatgen's PatchedPhaseDiagram in a child process, killed after timeout."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    proc = ctx.Process(target=_patched_child, args=(raw, sample, results))
    start = time.perf_counter()
    proc.start()
    while (elapsed := time.perf_counter() - start) < timeout:
        try:
            out = results.get(timeout=min(10.0, max(timeout - elapsed, 0.1)))
        except queue_lib.Empty:
            if not proc.is_alive():
                return {"failed": f"child exited with code {proc.exitcode}"}
            continue
        proc.join()
        out["child_total_wall_s"] = round(time.perf_counter() - start, 1)
        return out
    proc.kill()
    proc.join()
    return {"timed_out_after_s": timeout}


def new_entries(
    parsed: dict[str, dict[str, float]],
    energies: dict[str, float],
    n: int,
    rng: np.random.Generator,
) -> list[tuple[str, dict[str, float], float]]:
    """New entries: polymorphs of random entries and new compositions.

    Every other entry gains one atom of one element; energies are the parent's
    ± 0.05 eV/atom, so a good part of them lands on the hull and moves it.
    """
    keys = list(parsed)
    out = []
    for i in range(n):
        key = keys[rng.integers(len(keys))]
        amounts = dict(parsed[key])
        if i % 2:
            el = sorted(amounts)[rng.integers(len(amounts))]
            amounts[el] += 1
        out.append((f"new{i}", amounts, energies[key] + float(rng.normal(0, 0.05))))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 also when the data is absent (nothing to measure)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-patched", action="store_true",
                        help="do not build pymatgen's PatchedPhaseDiagram (~990 s)")
    parser.add_argument("--patched-timeout", type=float, default=3600.0,
                        help="kill the PatchedPhaseDiagram build after this (s)")
    parser.add_argument("--methods", default="auto",
                        help="engine methods to time, comma-separated (auto,lp,qhull)")
    parser.add_argument("--sample", type=int, default=500)
    parser.add_argument("--new", type=int, default=1000, help="entries to add")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    path = DATA / "mp_formation_energy_per_atom.json"
    if not path.is_file():
        print(f"skipped: {path} not found (the shared reference data is absent)")
        return 0
    from importlib.metadata import version

    from flywheel.makers.hull.engine import HullEngine, parse_composition

    raw: dict[str, float] = json.loads(path.read_text())
    rng = np.random.default_rng(args.seed)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0], "numpy": np.__version__,
                    "scipy": version("scipy"), "pymatgen": version("pymatgen"),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "load_average_at_start": os.getloadavg()},
        "data": {"file": str(path), "entries": len(raw),
                 "energies": "formation energy (eV/atom), elements at 0 eV/atom"},
    }

    # -- the engine, from the composition strings -----------------------------------
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    main_method = methods[0]
    items = [(k, k, v) for k, v in raw.items()]  # id, composition, eV/atom
    engines: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for method in methods:
        with Timer() as t:
            engine = HullEngine(items, elements_at_zero=True, method=method)
        engines[method] = engine
        timings[method] = t.as_dict()
        if method == main_method:  # ru_maxrss: KiB on Linux, input data included
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        logger.info("engine %-5s: %.1f s wall, %.1f s CPU", method, t.wall, t.cpu)
    engine = engines[main_method]
    res = engine.results
    with Timer() as t_parse:
        parsed = {k: parse_composition(k) for k in raw}
    report["engine"] = {
        "method": main_method, **timings[main_method],
        "of_which_parsing_compositions": t_parse.as_dict(),
        "entries": len(engine), "chemical_systems": len(engine.chemical_systems),
        "stable": sum(r.stable for r in res.values()), "skipped": len(engine.skipped),
        "peak_rss_mb": round(peak_mb),
    }
    report["alternatives"] = {
        m: {**timings[m], f"max_abs_diff_vs_{main_method}": _max_diff(
            engines[m].results, res)} for m in methods[1:]
    }
    for m in methods[1:]:
        del engines[m]

    # -- exact pymatgen PhaseDiagrams on a sample --------------------------------------
    sample = [str(k) for k in rng.choice(list(raw), size=args.sample, replace=False)]
    check = pymatgen_sample_check(parsed, raw, res, sample)
    report["pymatgen_check"] = check
    logger.info("pymatgen sample (%d): max |Δ e_above_hull| %.2e, max |Δ decomp| %.2e",
                len(sample), check["max_abs_diff_e_above_hull"],
                check["max_abs_diff_decomposition_energy"])

    # -- incremental update vs full rebuild ------------------------------------------
    added = new_entries(parsed, raw, args.new, rng)
    before = dict(res)
    with Timer() as t_inc:
        changed = engine.add_entries(added)
    with Timer() as t_full:
        full = HullEngine([*items, *added], elements_at_zero=True, method=main_method)
    diff = _max_diff(full.results, engine.results)
    truly = {k for k, r in engine.results.items()
             if k not in before or _differs(before[k], r)}
    report["incremental"] = {
        "new_entries": len(added), **t_inc.as_dict(), **engine.last_update,
        "new_stable": sum(engine.results[k].stable for k, _, _ in added),
        "full_rebuild": t_full.as_dict(),
        "max_abs_diff_vs_full_rebuild": diff,
        "changed_ids_exact": changed == truly,
    }
    logger.info("incremental +%d: %.2f s (%d ids changed, %d systems solved); "
                "full rebuild %.1f s; max diff %.1e", len(added), t_inc.wall,
                len(changed), engine.last_update["systems_solved"], t_full.wall, diff)

    # -- published decomposition energies are not the reference ------------------------
    published = json.loads((DATA / "mp_decomposition_energy_per_atom.json").read_text())
    common = [k for k in published if k in res]
    mae = float(np.mean([abs(published[k] - res[k].decomposition_energy)
                         for k in common]))
    report["published_decomposition_energies"] = {
        "mae_vs_engine_eV_per_atom": mae, "entries": len(common),
        "note": "Bartel et al.'s published decomposition energies come from another "
                "energy set and do not follow from these formation energies; they are "
                "not the reference. Exact pymatgen PhaseDiagrams are (pymatgen_check).",
    }

    # -- pymatgen's PatchedPhaseDiagram ------------------------------------------------
    if args.skip_patched:
        report["patched_phase_diagram"] = {"skipped": "--skip-patched"}
    else:
        logger.info("PatchedPhaseDiagram of %d entries (timeout %.0f s) ...",
                    len(raw), args.patched_timeout)
        ppd = patched_phase_diagram(raw, sample, args.patched_timeout)
        if "e_above_hull" in ppd:
            diffs = {k: abs(v - res[k].e_above_hull)
                     for k, v in ppd.pop("e_above_hull").items()}
            ppd["sample_max_abs_diff_e_above_hull_vs_engine"] = max(diffs.values())
            # the engine matches exact PhaseDiagrams (pymatgen_check): these are PPD's
            ppd["sample_diffs_above_1e-6"] = {k: d for k, d in diffs.items()
                                              if d > 1e-6}
            ppd["speedup_engine_vs_build_wall"] = round(
                ppd["build"]["wall_s"] / report["engine"]["wall_s"], 1)
        report["patched_phase_diagram"] = ppd
        logger.info("PatchedPhaseDiagram: %s", ppd)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    # numpy scalars (float64, bool_) → plain JSON numbers and booleans
    text = json.dumps(report, indent=2, default=lambda o: o.item())
    args.out.write_text(text + "\n")
    print(json.dumps({k: report[k] for k in ("engine", "incremental")}, indent=2,
                     default=lambda o: o.item()))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
