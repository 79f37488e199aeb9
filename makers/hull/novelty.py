"""Is an oracle result new? Structure matching against known materials.

Every oracle result is matched, once, against the reference structures of its
composition (``references``: MP, GNoME, the user's) and against the campaign's earlier
results of that composition, with the comparisons the generators' deduplication makes
with the database (isometry key, then ``StructureMatcher`` within the formula bucket;
:func:`~flywheel.makers.generate.dedup.match_structures`). The verdict is stored on the
material and never changes:

* ``novelty: "known"``, ``known_id``: the reference it matches (e.g. ``mp-19419``);
  a recomputed reference is known by construction;
* ``novelty: "duplicate"``, ``known_id``: an earlier campaign material it matches
  (or that material's reference, if that one was known);
* ``novelty: "new"``: no match;
* ``novelty: "unjudged"``: a result stored without a structure.

Only a ``new`` material can be a discovery (see :func:`is_discovery`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.db.stores import CampaignDB

logger = logging.getLogger(__name__)

#: Generators whose results are never discoveries: round-0 seeds (known structures
#: or textbook prototypes by intent) and recomputed references.
NOT_DISCOVERABLE = frozenset({"seed", "reference"})


def assign_novelty(
    materials: list[dict[str, Any]],
    references: list[dict[str, Any]],
    earlier: list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Novelty verdicts for ``materials`` (pure: documents in, verdicts out).

    Parameters
    ----------
    materials
        Documents to judge (``material_id``, ``formula``, ``structure`` as a dict,
        ``generator``, ``reference_id`` for recomputed references). Judged in
        ``material_id`` order, so a later one can be a duplicate of an earlier one.
    references
        Reference documents (``entry_id``, ``formula``, ``structure``).
    earlier
        Already judged campaign materials (``material_id``, ``formula``,
        ``structure``, ``novelty``, ``known_id``).

    Returns
    -------
    dict
        ``material_id`` → ``{"novelty": ..., "known_id": ...}``.
    """
    from pymatgen.core import Structure

    from flywheel.makers.generate.dedup import match_structures

    def by_formula(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for d in docs:
            if d.get("structure"):
                out.setdefault(d["formula"], []).append(d)
        return out

    refs = by_formula(references)
    prior = by_formula(earlier)
    verdicts: dict[str, dict[str, Any]] = {}
    for doc in sorted(materials, key=lambda d: d["material_id"]):
        mid, formula = doc["material_id"], doc["formula"]
        if doc.get("generator") == "reference" and doc.get("reference_id"):
            verdict = {"novelty": "known", "known_id": doc["reference_id"]}
        elif not doc.get("structure"):  # cannot be judged, so never a discovery
            verdict = {"novelty": "unjudged", "known_id": None}
        else:
            structure = Structure.from_dict(doc["structure"])
            verdict = {"novelty": "new", "known_id": None}
            for pool, kind in ((refs.get(formula, []), "known"),
                               (prior.get(formula, []), "duplicate")):
                if not pool:
                    continue
                hit = match_structures(
                    [structure], [Structure.from_dict(d["structure"]) for d in pool],
                    closest=True,
                )[0]
                if hit is None:
                    continue
                match = pool[hit]
                if kind == "known":
                    verdict = {"novelty": "known", "known_id": match["entry_id"]}
                elif match.get("novelty") == "known":
                    verdict = {"novelty": "known", "known_id": match["known_id"]}
                else:
                    verdict = {"novelty": "duplicate",
                               "known_id": match["material_id"]}
                break
        verdicts[mid] = verdict
        prior.setdefault(formula, []).append({**doc, **verdict})
    return verdicts


def is_discovery(
    generator: str, novelty: str | None, hull_margin: float | None, tolerance: float
) -> bool:
    """A discovery: generated (not a seed or reference), new by structure, and on
    the hull by more than ``tolerance``: below the hull of every other entry, other
    polymorphs of its composition included, by more than ``tolerance`` (eV/atom;
    ``hull_margin`` from :func:`~flywheel.makers.hull.jobs.hull_margin`).
    """
    return (
        generator not in NOT_DISCOVERABLE
        and novelty == "new"
        and hull_margin is not None
        and hull_margin < -tolerance
    )


def judge_new_materials(db: CampaignDB) -> Counter[str]:
    """Store the novelty verdict of every material that has none yet.

    Returns
    -------
    collections.Counter
        Verdicts written, by kind.
    """
    from pymongo import UpdateOne

    fields = {"material_id": 1, "formula": 1, "structure": 1, "generator": 1,
              "reference_id": 1, "novelty": 1, "known_id": 1}
    todo = list(db.materials.find(db.q(novelty=None), fields))
    if not todo:
        return Counter()
    formulas = sorted({d["formula"] for d in todo})
    references = list(db.references.find(
        db.q(formula={"$in": formulas}, structure={"$ne": None}),
        {"entry_id": 1, "formula": 1, "structure": 1}))
    earlier = list(db.materials.find(
        db.q(formula={"$in": formulas}, novelty={"$ne": None}), fields))
    verdicts = assign_novelty(todo, references, earlier)
    db.bulk_write("materials", [UpdateOne(db.q(material_id=mid), {"$set": v})
                                for mid, v in verdicts.items()])
    counts = Counter(v["novelty"] for v in verdicts.values())
    logger.info("novelty of %d new results: %s", len(verdicts), dict(counts))
    return counts
