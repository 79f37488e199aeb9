"""What the r²SCAN re-check recomputes and what it concludes (pure functions).

GNoME re-ran its discoveries with r²SCAN and kept as confirmed those whose
phase-separation energy stayed negative (84 % of binaries and ternaries). A
phase-separation energy only means something against competing phases computed at the
same level, so the re-check recomputes every discovery **and** the stable phases of
every chemical subsystem of its system (elements included), then builds an r²SCAN-only
hull from those.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any


def subsystems(chemsys: str) -> set[str]:
    """Every non-empty chemical subsystem of ``"A-B-C"`` (sorted element names)."""
    els = sorted(chemsys.split("-"))
    return {"-".join(c) for k in range(1, len(els) + 1) for c in combinations(els, k)}


def select_recheck(
    materials: list[dict[str, Any]], max_materials: int
) -> tuple[list[str], list[str]]:
    """The discoveries to re-check and the competing phases they need.

    Parameters
    ----------
    materials
        Campaign materials with ``material_id``, ``chemsys``, ``stable``,
        ``discovery`` and ``decomposition_energy``.
    max_materials
        At most this many discoveries, most negative decomposition energy first.

    Returns
    -------
    (discoveries, competitors)
        Material ids; competitors are the stable non-discovery materials of every
        subsystem of a selected discovery's system.
    """
    found = sorted(
        (m for m in materials if m.get("discovery")),
        key=lambda m: (m.get("decomposition_energy") or 0.0, m["material_id"]),
    )[:max_materials]
    chosen = {m["material_id"] for m in found}
    needed = set().union(*(subsystems(m["chemsys"]) for m in found)) if found else set()
    competitors = sorted(
        m["material_id"] for m in materials
        if m.get("stable") and m["material_id"] not in chosen and m["chemsys"] in needed
    )
    return [m["material_id"] for m in found], competitors


def summarize_recheck(
    discoveries: list[dict[str, Any]],
    recomputed: list[dict[str, Any]],
    tolerance: float,
) -> dict[str, Any]:
    """Place each discovery on the hull of the re-computed entries.

    Parameters
    ----------
    discoveries
        The selected discoveries (``material_id``, ``formula``, ``chemsys``,
        ``nelements``, ``decomposition_energy`` at the campaign's fidelity).
    recomputed
        Higher-fidelity results (``material_id``, ``formula``, ``energy_per_atom``)
        of discoveries and competitors.
    tolerance
        On-hull tolerance (eV/atom).

    Returns
    -------
    dict
        ``materials``: per discovery, its r²SCAN hull record (``e_above_hull``,
        ``decomposition_energy`` = phase-separation energy when stable, ``survives``)
        or why it could not be judged; ``n_checked``, ``n_survived``,
        ``survival_rate`` and the same by number of elements.
    """
    from flywheel.makers.hull.engine import HullEngine

    engine = HullEngine(
        [(d["material_id"], d["formula"], d["energy_per_atom"]) for d in recomputed],
        tolerance=tolerance,
    )
    done = {d["material_id"] for d in recomputed}
    per: dict[str, dict[str, Any]] = {}
    by_n: dict[int, dict[str, int]] = defaultdict(lambda: {"checked": 0, "survived": 0})
    for m in discoveries:
        mid = m["material_id"]
        base = {"formula": m["formula"], "nelements": m["nelements"],
                "decomposition_energy_before": m.get("decomposition_energy")}
        if mid not in done:
            per[mid] = {**base, "status": "not recomputed (high-fidelity run failed)"}
            continue
        rec = engine.results.get(mid)
        if rec is None:
            reason = engine.skipped.get(mid, "no hull")
            per[mid] = {**base, "status": f"incomplete: {reason}"}
            continue
        per[mid] = {
            **base,
            "status": "checked",
            "e_above_hull": rec.e_above_hull,
            "decomposition_energy": rec.decomposition_energy,
            "survives": bool(rec.stable),
        }
        by_n[m["nelements"]]["checked"] += 1
        by_n[m["nelements"]]["survived"] += int(rec.stable)
    checked = sum(v["checked"] for v in by_n.values())
    survived = sum(v["survived"] for v in by_n.values())
    return {
        "materials": per,
        "n_selected": len(discoveries),
        "n_checked": checked,
        "n_survived": survived,
        "survival_rate": survived / checked if checked else None,
        "by_nelements": {str(k): dict(v) for k, v in sorted(by_n.items())},
    }
