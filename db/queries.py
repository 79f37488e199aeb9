"""Queries users run on a campaign's results (the CLI's ``query`` and ``status``)."""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymongo.database import Database


def subsystems(chemsys: str) -> list[str]:
    """Every chemical system within ``chemsys`` (``Li-O`` → ``Li``, ``O``, ``Li-O``)."""
    els = sorted(set(chemsys.split("-")))
    return ["-".join(c) for n in range(1, len(els) + 1) for c in combinations(els, n)]


def material_filter(
    *,
    campaign: str | None = None,
    stable: bool | None = None,
    discoveries: bool = False,
    known: bool = False,
    chemsys: str | None = None,
    formula: str | None = None,
    max_ehull: float | None = None,
    round_index: int | None = None,
    nelements: int | None = None,
    layered: bool = False,
    li_conductor: bool = False,
) -> dict[str, Any]:
    """The MongoDB filter for the ``materials`` collection.

    ``chemsys`` selects the whole phase diagram: every entry whose elements are a subset
    (``Li-Fe-O`` includes Li, O2 and Li2O), as Materials Project does. ``discoveries``:
    new by structure and on the hull (``discovery``); ``known``: results that match a
    reference structure (``novelty: known``, the reference in ``known_id``).
    ``layered`` / ``li_conductor``: passed that screen (``flywheel screen``).
    """
    q: dict[str, Any] = {}
    if campaign:
        q["campaign"] = campaign
    if stable is not None:
        q["stable"] = stable
    if discoveries:
        q["discovery"] = True
    if known:
        q["novelty"] = "known"
    if chemsys:
        q["chemsys"] = {"$in": subsystems(chemsys)}
    if formula:
        from pymatgen.core import Composition

        q["formula"] = Composition(formula).reduced_formula
    if max_ehull is not None:
        q["e_above_hull"] = {"$lte": max_ehull}
    if round_index is not None:
        q["round"] = round_index
    if nelements is not None:
        q["nelements"] = nelements
    if layered:
        q["screens.layered.layered"] = True
    if li_conductor:
        q["screens.li_conductor.candidate"] = True
    return q


MATERIAL_FIELDS = {
    "_id": 0, "campaign": 1, "material_id": 1, "formula": 1, "chemsys": 1,
    "round": 1, "generator": 1, "energy_per_atom": 1, "e_above_hull": 1,
    "decomposition_energy": 1, "stable": 1, "discovery": 1, "nsites": 1,
    "novelty": 1, "known_id": 1, "selected_by": 1, "screens": 1,
}


def find_materials(
    db: Database, limit: int = 0, with_structure: bool = False, **filters: Any
) -> list[dict[str, Any]]:
    """Materials matching ``filters`` (see :func:`material_filter`), by chemsys and
    energy above hull.
    """
    fields = dict(MATERIAL_FIELDS)
    if with_structure:
        fields["structure"] = 1
    cur = db["materials"].find(material_filter(**filters), fields).sort(
        [("chemsys", 1), ("e_above_hull", 1), ("formula", 1)]
    )
    if limit:
        cur = cur.limit(limit)
    return list(cur)


def round_table(db: Database, campaign: str) -> list[dict[str, Any]]:
    """The ``rounds`` documents of a campaign, in order."""
    return list(db["rounds"].find({"campaign": campaign}, {"_id": 0}).sort("round", 1))


def fw_status(db: Database, campaign: str | None = None) -> list[dict[str, Any]]:
    """Firework counts per round, category and state from the LaunchPad collections."""
    from flywheel.db.tags import TAG, fw_tag, tag_query

    counts: dict[tuple, int] = {}
    for fw in db["fireworks"].find(
        tag_query(campaign or None), {"state": 1, "spec._category": 1, f"spec.{TAG}": 1}
    ):
        meta = fw_tag(fw)
        key = (meta["campaign"], meta["round"], fw["spec"].get("_category"), fw["state"])
        counts[key] = counts.get(key, 0) + 1
    return [
        {"campaign": c, "round": r, "category": cat, "state": s, "count": n}
        for (c, r, cat, s), n in sorted(counts.items(), key=lambda kv: str(kv[0]))
    ]
