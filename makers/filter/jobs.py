"""The ML filter stage: score this round's candidates with the ensemble and select."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from flywheel.makers.common import campaign_db, limit_threads

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.schemas import FilterOutput

logger = logging.getLogger(__name__)


def current_hull(db: CampaignDB, config: CampaignConfig):
    """Return a HullEngine over the campaign's hull entries (oracle results and, on
    the same energy scale, references; :func:`~flywheel.makers.hull.core.hull_entries`).

    ``hull_energy(composition)`` is None where an elemental reference is missing.
    """
    from flywheel.makers.hull.core import hull_entries
    from flywheel.makers.hull.engine import HullEngine

    return HullEngine(hull_entries(db, config))


def unscorable_reason(
    structure: Any, hull_energy: float | None, model_elements: set[int]
) -> str | None:
    """Why the filter cannot score ``structure`` (``hull_energy``: the current hull at
    its composition, None if there is none), or None."""
    if not structure.is_ordered:
        return "disordered structure"
    unknown = {el.symbol for el in structure.composition.elements
               if el.Z not in model_elements}
    if unknown:
        return f"elements unknown to the model: {', '.join(sorted(unknown))}"
    if hull_energy is None:
        chemsys = "-".join(sorted(el.symbol for el in structure.composition.elements))
        return f"no hull for {chemsys} (an elemental reference is missing)"
    return None


def generator_quotas(db: CampaignDB, pool_generators: list[str], budget: int) -> dict:
    """Split this round's budget across generators.

    Proportional to each generator's measured hit rate (stable ÷ evaluated) in
    earlier rounds, Beta-smoothed.
    """
    from collections import Counter

    from flywheel.makers.filter.calibration import generator_budget_split

    hits: dict[str, tuple[int, int]] = {}
    for row in db.materials.aggregate([
        {"$match": db.q(generator={"$ne": "seed"})},
        {"$group": {"_id": "$generator", "n": {"$sum": 1},
                    "hits": {"$sum": {"$cond": ["$stable", 1, 0]}}}},
    ]):
        hits[row["_id"]] = (row["hits"], row["n"])
    available = Counter(pool_generators)
    for gen in available:
        hits.setdefault(gen, (0, 0))
    quotas = generator_budget_split(hits, budget, available=available)
    logger.info("budget per generator: %s (hits/evaluated %s)", quotas, hits)
    return {g: q for g, q in quotas.items() if q > 0}


def prerelax_pool(
    db: CampaignDB,
    ids: list[str],
    structures: list,
    originals: list[dict],
    todo: list[bool],
    fcfg: Any,
    *,
    mace_model: Any = None,
    model_round: int | None = None,
    device: str = "cpu",
) -> dict[str, int]:
    """Pre-relax the pool members flagged in ``todo`` and store the outcome.

    A success replaces ``structures[i]`` (and the candidate's stored ``structure``,
    which the oracle reads) and keeps the input as ``structure_unrelaxed``; every
    attempt records ``prerelaxed`` (model, steps, energy change or error), so a
    candidate rescored in a later round is not relaxed again.

    Returns
    -------
    dict
        Counts: ``prerelaxed`` (attempted), ``failed``, ``skipped`` (done before).
    """
    from monty.json import jsanitize
    from pymongo import UpdateOne

    from flywheel.makers.filter.prerelax import prerelax_structures

    idx = [i for i, t in enumerate(todo) if t]
    counts = {"prerelaxed": len(idx), "failed": 0, "skipped": len(todo) - len(idx)}
    if not idx:
        return counts
    results = prerelax_structures(
        [structures[i] for i in idx], fcfg.prerelax, mace_model=mace_model,
        steps=fcfg.prerelax_steps, fmax=fcfg.prerelax_fmax,
        batch_size=fcfg.batch_size, device=device,
    )
    ops = []
    for i, res in zip(idx, results, strict=True):
        record = res.record(fcfg.prerelax)
        if fcfg.prerelax == "mace":
            record["model_round"] = model_round
        update: dict[str, Any] = {"prerelaxed": record}
        if res.ok:
            structures[i] = res.structure
            update["structure"] = jsanitize(res.structure.as_dict())
            update["structure_unrelaxed"] = originals[i]
        else:
            counts["failed"] += 1
            logger.info("prerelax of %s failed (original kept): %s", ids[i], res.error)
        # Only 'generated' candidates: the oracle may already hold a selected one.
        ops.append(UpdateOne(db.q(candidate_id=ids[i], status="generated"),
                             {"$set": update}))
    db.bulk_write("candidates", ops)
    logger.info("prerelax (%s): %s", fcfg.prerelax, counts)
    return counts


@dataclass
class FilterMaker(Maker):
    """Score the candidate pool with the MACE ensemble and select the round's budget.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "filter"

    @job
    def make(
        self, config: CampaignConfig, round_index: int, generated: Any = None
    ) -> FilterOutput:
        """Predict, score against the current hull, draw the audit and select."""
        from collections import Counter

        import numpy as np
        from pymatgen.core import Structure
        from pymongo import UpdateOne

        from flywheel.makers.filter.acquisition import plan_selection, score
        from flywheel.makers.filter.core import load_models, predict_energies
        from flywheel.makers.filter.tta import predict_with_tta
        from flywheel.makers.schemas import FilterOutput
        from flywheel.settings import get_settings

        limit_threads()
        start = time.perf_counter()
        fcfg = config.filter
        db = campaign_db(config)
        hull = current_hull(db, config)
        device = get_settings().resolved_device()
        model_round = round_index - 1
        ids, formulas, structures, hull_e, gens = [], [], [], [], []
        originals, todo = [], []
        unscorable: Counter[str] = Counter()
        selected: list[str] = []
        audit_ids: list[str] = []
        prerelax_counts: dict[str, int] = {}
        with tempfile.TemporaryDirectory() as tmp:
            models = load_models(db.fetch_models(model_round, Path(tmp)), device)
            known_z = {int(z) for z in models[0].atomic_numbers}
            # The pool is every candidate not yet sent to the oracle, from this and
            # earlier rounds: one passed over last round is rescored by the better
            # model.
            for doc in db.candidates.find(
                db.q(status="generated", round={"$lte": round_index}),
                {"candidate_id": 1, "structure": 1, "formula": 1, "generator": 1,
                 "prerelaxed": 1},
            ).sort("candidate_id", 1):
                s = Structure.from_dict(doc["structure"])
                e_hull = hull.hull_energy(s.composition)
                reason = unscorable_reason(s, e_hull, known_z)
                if reason is not None:
                    unscorable[reason] += 1
                    continue
                ids.append(doc["candidate_id"])
                gens.append(doc["generator"])
                formulas.append(doc["formula"])
                structures.append(s)
                hull_e.append(e_hull)
                originals.append(doc["structure"])
                todo.append(fcfg.prerelax != "none" and "prerelaxed" not in doc)
            if structures and any(todo):
                prerelax_counts = prerelax_pool(
                    db, ids, structures, originals, todo, fcfg,
                    mace_model=models[0], model_round=model_round, device=device)
            if structures and fcfg.tta_scales == [1.0]:
                energies = predict_energies(
                    models, structures, batch_size=fcfg.batch_size, device=device
                )
            elif structures:
                energies = predict_with_tta(
                    models, structures, scales=tuple(fcfg.tta_scales),
                    aggregate="min", batch_size=fcfg.batch_size, device=device,
                )
        if unscorable:
            logger.warning("round %d: %d candidates not scored: %s", round_index,
                           sum(unscorable.values()), dict(unscorable))
        if structures and len(structures) < 2 * fcfg.budget:
            logger.warning(
                "round %d: the filter chooses %d of only %d scorable candidates, so "
                "its ranking can barely matter; raise the generator budgets or enable "
                "generate.random_search for a larger pool", round_index,
                min(fcfg.budget, len(structures)), len(structures))
        if structures:
            s = score(energies, np.asarray(hull_e), kappa=fcfg.kappa)

            def quotas(pool_generators: list[str], k: int) -> dict:
                if fcfg.split_by_generator:
                    return generator_quotas(db, pool_generators, k)
                return {None: k}

            selected, audit_ids = plan_selection(
                ids, formulas, gens, s.acquisition, budget=fcfg.budget,
                n_audit=config.audit_count(), quotas=quotas,
                max_per_formula=fcfg.max_per_formula, strategy=fcfg.selection,
                seed=[config.generate.seed, round_index],
            )
            db.bulk_write("candidates", [
                UpdateOne(db.q(candidate_id=cid), {"$set": {"prediction": {
                    "energy_per_atom": float(s.mean[i]),
                    "energy_std": float(s.std[i]),
                    "e_above_hull": float(s.e_above_hull[i]),
                    "acquisition": float(s.acquisition[i]),
                    "model_round": model_round,
                }}})
                for i, cid in enumerate(ids)
            ])
            # Only promote 'generated': a rerun must not undo 'relaxed' or 'failed'.
            audit = set(audit_ids)
            for by, chosen in (("audit", sorted(audit)),
                               ("filter", sorted(set(selected) - audit))):
                db.candidates.update_many(
                    db.q(candidate_id={"$in": chosen}, status="generated"),
                    {"$set": {"status": "selected", "selected_round": round_index,
                              "selected_by": by}},
                )
        return FilterOutput(
            round=round_index,
            scored=len(structures),
            unscorable=sum(unscorable.values()),
            unscorable_reasons=dict(unscorable),
            selected_ids=selected,
            audit_ids=audit_ids,
            model_round=model_round,
            seconds=time.perf_counter() - start,
            prerelaxed=prerelax_counts.get("prerelaxed", 0),
            prerelax_failed=prerelax_counts.get("failed", 0),
        )
