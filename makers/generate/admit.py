"""Admit generated structures into the ``candidates`` collection: check, dedup, store.

Seeds and every generator go through :func:`admit_candidates`, so rejection reasons,
deduplication against the database and batched writes are handled in one place.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from flywheel.makers.common import structure_fields
from flywheel.makers.schemas import GenerateOutput

if TYPE_CHECKING:
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.generate.core import Candidate

logger = logging.getLogger(__name__)

WRITE_BATCH = 500


def _reason_key(reason: str) -> str:
    """Group reasons by their kind (numbers stripped) for counting."""
    import re

    return re.sub(r"[-+]?\d[\d.eE+-]*", "#", reason)


def known_structures(
    db: CampaignDB, formulas: set[str], before_round: int, references: bool = True
) -> list:
    """Structures already in the database for ``formulas``: every oracle result,
    every candidate of earlier rounds (this round's own are excluded so a rerun of the
    generating job sees the same database as the first run) and, with
    ``references``, every reference structure (known materials are not candidates).
    """
    from pymatgen.core import Structure

    out = []
    if references:
        for doc in db.references.find(
            db.q(formula={"$in": sorted(formulas)}, structure={"$ne": None}),
            {"structure": 1},
        ):
            out.append(Structure.from_dict(doc["structure"]))
    for doc in db.materials.find(
        db.q(formula={"$in": sorted(formulas)}), {"structure": 1}
    ):
        out.append(Structure.from_dict(doc["structure"]))
    for doc in db.candidates.find(
        db.q(formula={"$in": sorted(formulas)}, round={"$lt": before_round}),
        {"structure": 1},
    ):
        out.append(Structure.from_dict(doc["structure"]))
    return out


def admit_candidates(
    db: CampaignDB,
    round_index: int,
    candidates: list[Candidate],
    *,
    max_sites: int,
    status: str = "generated",
    budget: dict[str, int] | None = None,
    seed: int = 0,
    against_references: bool = True,
) -> GenerateOutput:
    """Check, deduplicate and store ``candidates`` for ``round_index``.

    Parameters
    ----------
    max_sites
        Largest candidate cell; references (:attr:`Candidate.is_reference`) are
        exempt.
    budget
        Maximum unique candidates kept per generator; a random (seeded) subset is kept
        when a generator produced more, except for seeds, whose order is a priority
        (the first ones are kept). References are never cut; elemental seeds count
        towards the seeds' budget, recomputed references do not.
    against_references
        Drop candidates that match a reference structure (round 0 recomputes the
        references themselves, so it turns this off).
    """
    import random

    from pymongo import UpdateOne

    from flywheel.makers.generate.dedup import fast_dedup
    from flywheel.makers.generate.structures import check_structure

    reasons: Counter[str] = Counter()
    sane = []
    for cand in candidates:
        reason = check_structure(cand.structure)
        if reason is None and len(cand.structure) > max_sites and not cand.is_reference:
            reason = f"{len(cand.structure)} sites exceed chemistry.max_sites={max_sites}"
        if reason is None:
            sane.append(cand)
        else:
            reasons[_reason_key(reason)] += 1
    formulas = {c.structure.composition.reduced_formula for c in sane}
    known = known_structures(db, formulas, round_index, against_references)
    unique, n_batch, n_known = fast_dedup(sane, known)

    kept: list[Candidate] = []
    by_gen: dict[str, list[Candidate]] = {}
    for cand in unique:
        by_gen.setdefault(cand.generator, []).append(cand)
    rng = random.Random(seed + round_index)
    for gen, cands in sorted(by_gen.items()):
        limit = (budget or {}).get(gen)
        if gen == "reference":
            pass
        elif limit is not None and gen == "seed":
            elemental = [c for c in cands if c.is_reference]
            rest = [c for c in cands if not c.is_reference]
            cands = elemental + rest[: max(limit - len(elemental), 0)]
        elif limit is not None and len(cands) > limit:
            cands = [cands[i] for i in sorted(rng.sample(range(len(cands)), limit))]
        kept.extend(cands)

    ops, ids = [], []
    counters: Counter[str] = Counter()
    for cand in kept:
        tag = cand.generator[:3]
        cid = f"r{round_index}-{tag}-{counters[tag]:05d}"
        counters[tag] += 1
        ids.append(cid)
        doc = {
            "campaign": db.campaign,
            "candidate_id": cid,
            "round": round_index,
            "generator": cand.generator,
            "source": getattr(cand, "source", None),
            "parent_id": cand.parent_id,
            "substitution": cand.substitution,
            "reference_id": cand.reference_id,
            "structure": cand.structure.as_dict(),
            "status": status,
            "selected_round": round_index if status == "selected" else None,
            **structure_fields(cand.structure),
        }
        # $setOnInsert: a rerun of the job never overwrites what later stages wrote.
        ops.append(
            UpdateOne(db.q(candidate_id=cid), {"$setOnInsert": doc}, upsert=True)
        )
    db.bulk_write("candidates", ops, batch=WRITE_BATCH)
    logger.info(
        "round %d: %d generated, %d rejected, %d duplicates, %d stored",
        round_index, len(candidates), sum(reasons.values()), n_batch + n_known, len(kept),
    )
    return GenerateOutput(
        round=round_index,
        generated=len(candidates),
        rejected=sum(reasons.values()),
        rejection_reasons=dict(reasons),
        duplicates=n_batch + n_known,
        unique=len(kept),
        per_generator=dict(Counter(c.generator for c in kept)),
        selected_ids=ids if status == "selected" else None,
    )
