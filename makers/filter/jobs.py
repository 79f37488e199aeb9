"""The ML filter stage: score this round's candidates with the ensemble and select."""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
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
    # Only 'generated' candidates: the oracle may already hold a selected one. The
    # statuses are read by a key range and the updates filter by the key alone: an
    # update filtering on a field beyond the unique index is a collection scan on
    # the local server (0.26 s vs 0.7 ms per update on 10^4 candidates).
    keys = sorted(ids[i] for i in idx)
    generated = {d["candidate_id"] for d in db.candidates.find(
        db.q(candidate_id={"$gte": keys[0], "$lte": keys[-1]}),
        {"candidate_id": 1, "status": 1}) if d.get("status") == "generated"}
    ops = []
    for i, res in zip(idx, results, strict=True):
        if ids[i] not in generated:
            continue
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
        ops.append(UpdateOne(db.q(candidate_id=ids[i]), {"$set": update}))
    db.bulk_write("candidates", ops)
    logger.info("prerelax (%s): %s", fcfg.prerelax, counts)
    return counts


@dataclass
class Pool:
    """The candidates the filter can score, in ``candidate_id`` order."""

    ids: list[str] = field(default_factory=list)
    gens: list[str] = field(default_factory=list)
    formulas: list[str] = field(default_factory=list)
    hull_e: list[float] = field(default_factory=list)
    structures: list = field(default_factory=list)
    originals: list[dict] = field(default_factory=list)
    todo: list[bool] = field(default_factory=list)
    unscorable: Counter = field(default_factory=Counter)
    unscorable_ids: dict[str, str] = field(default_factory=dict)


def pool_query(db: CampaignDB, round_index: int, ids: list[str] | None = None) -> dict:
    """Every candidate not yet sent to the oracle, from this and earlier rounds (one
    passed over last round is rescored by the better model)."""
    q = db.q(status="generated", round={"$lte": round_index})
    if ids is not None:
        # A range on the unique index, filtered to ``ids`` by the caller: the local
        # server evaluates a large $in per document (18 s for 2,500 ids in 10^4).
        q["candidate_id"] = ({"$gte": min(ids), "$lte": max(ids)} if ids
                             else {"$in": []})
    return q


def scorable_pool(db: CampaignDB, config: CampaignConfig, round_index: int,
                  models: list, hull: Any, ids: list[str] | None = None) -> Pool:
    """Load the pool (or its ``ids``) and sort out what cannot be scored, and why."""
    from pymatgen.core import Structure

    known_z = {int(z) for z in models[0].atomic_numbers}
    wanted = None if ids is None else set(ids)
    pool = Pool()
    for doc in db.candidates.find(
        pool_query(db, round_index, ids),
        {"candidate_id": 1, "structure": 1, "formula": 1, "generator": 1,
         "prerelaxed": 1},
    ).sort("candidate_id", 1):
        if wanted is not None and doc["candidate_id"] not in wanted:
            continue
        st = Structure.from_dict(doc["structure"])
        e_hull = hull.hull_energy(st.composition)
        reason = unscorable_reason(st, e_hull, known_z)
        if reason is not None:
            pool.unscorable[reason] += 1
            pool.unscorable_ids[doc["candidate_id"]] = reason
            continue
        pool.ids.append(doc["candidate_id"])
        pool.gens.append(doc["generator"])
        pool.formulas.append(doc["formula"])
        pool.structures.append(st)
        pool.hull_e.append(e_hull)
        pool.originals.append(doc["structure"])
        pool.todo.append(config.filter.prerelax != "none" and "prerelaxed" not in doc)
    return pool


def predict_pool(db: CampaignDB, config: CampaignConfig, pool: Pool, models: list,
                 model_round: int, device: str) -> tuple[dict[str, int], Any]:
    """Pre-relax (``filter.prerelax``) and predict the pool: ``(prerelax counts,
    energies of shape (n_models, n))``, eV/atom."""
    import numpy as np

    from flywheel.makers.filter.core import predict_energies
    from flywheel.makers.filter.tta import predict_with_tta

    fcfg = config.filter
    counts: dict[str, int] = {}
    if not pool.ids:
        return counts, np.zeros((len(models), 0))
    if any(pool.todo):
        counts = prerelax_pool(db, pool.ids, pool.structures, pool.originals, pool.todo,
                               fcfg, mace_model=models[0], model_round=model_round,
                               device=device)
    if fcfg.tta_scales == [1.0]:
        return counts, predict_energies(models, pool.structures,
                                        batch_size=fcfg.batch_size, device=device)
    return counts, predict_with_tta(models, pool.structures,
                                    scales=tuple(fcfg.tta_scales), aggregate="min",
                                    batch_size=fcfg.batch_size, device=device)


def screened(db: CampaignDB, round_index: int, model_round: int) -> dict[str, Any]:
    """What the screening jobs stored for the pool with ``model_round``'s ensemble:
    ``{candidate_id: doc}`` with ``formula``, ``generator``, ``prediction`` or
    ``unscorable``."""
    out = {}
    for doc in db.candidates.find(
        pool_query(db, round_index),
        {"candidate_id": 1, "formula": 1, "generator": 1, "prediction": 1,
         "unscorable": 1},
    ):
        pred, bad = doc.get("prediction") or {}, doc.get("unscorable") or {}
        if (pred.get("model_round") == model_round and "members" in pred
                and "hull_energy" in pred) or bad.get("model_round") == model_round:
            out[doc["candidate_id"]] = doc
    return out


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
        """Predict (or read what the screening jobs predicted), score against the
        current hull, draw the audit and select."""
        import numpy as np
        from pymongo import UpdateOne

        from flywheel.makers.filter.acquisition import plan_selection, score
        from flywheel.makers.filter.core import load_models
        from flywheel.makers.schemas import FilterOutput
        from flywheel.settings import get_settings

        limit_threads()
        start = time.perf_counter()
        fcfg = config.filter
        db = campaign_db(config)
        device = get_settings().resolved_device()
        model_round = round_index - 1
        selected: list[str] = []
        audit_ids: list[str] = []
        prerelax_counts: dict[str, int] = {}
        done = screened(db, round_index, model_round) if fcfg.shard_size else {}
        ids, gens, formulas, hull_e, columns = [], [], [], [], []
        unscorable: Counter[str] = Counter()
        for cid in sorted(done):  # scored (or rejected) by the screening jobs
            d = done[cid]
            if d.get("unscorable", {}).get("model_round") == model_round:
                unscorable[d["unscorable"]["reason"]] += 1
                continue
            ids.append(cid)
            gens.append(d["generator"])
            formulas.append(d["formula"])
            hull_e.append(d["prediction"]["hull_energy"])
            columns.append(d["prediction"]["members"])
        with tempfile.TemporaryDirectory() as tmp:
            models = load_models(db.fetch_models(model_round, Path(tmp)), device,
                                 cueq=config.filter.cueq)
            rest = None  # without shards: the whole pool is scored here
            if fcfg.shard_size:
                rest = [d["candidate_id"] for d in db.candidates.find(
                    pool_query(db, round_index), {"candidate_id": 1})
                    if d["candidate_id"] not in done]
                if rest:
                    logger.warning("round %d: %d pool candidates were not screened "
                                   "(a screening job failed?); scoring them here",
                                   round_index, len(rest))
            if rest is None or rest:
                pool = scorable_pool(db, config, round_index, models,
                                     current_hull(db, config), ids=rest)
                prerelax_counts, energies_rest = predict_pool(
                    db, config, pool, models, model_round, device)
                unscorable.update(pool.unscorable)
                ids += pool.ids
                gens += pool.gens
                formulas += pool.formulas
                hull_e += pool.hull_e
                columns += [list(energies_rest[:, i]) for i in range(len(pool.ids))]
            n_models = len(models)
        order = np.argsort(ids, kind="stable")  # candidate_id order, as before
        ids = [ids[i] for i in order]
        gens = [gens[i] for i in order]
        formulas = [formulas[i] for i in order]
        hull_e = [hull_e[i] for i in order]
        energies = (np.asarray([columns[i] for i in order], dtype=float).T
                    if ids else np.zeros((n_models, 0)))
        if unscorable:
            logger.warning("round %d: %d candidates not scored: %s", round_index,
                           sum(unscorable.values()), dict(unscorable))
        if ids and len(ids) < 2 * fcfg.budget:
            logger.warning(
                "round %d: the filter chooses %d of only %d scorable candidates, so "
                "its ranking can barely matter; raise the generator budgets or enable "
                "generate.random_search for a larger pool", round_index,
                min(fcfg.budget, len(ids)), len(ids))
        if ids:
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
                    "members": [float(x) for x in energies[:, i]],
                    "hull_energy": float(hull_e[i]),
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
            scored=len(ids),
            unscorable=sum(unscorable.values()),
            unscorable_reasons=dict(unscorable),
            selected_ids=selected,
            audit_ids=audit_ids,
            model_round=model_round,
            seconds=time.perf_counter() - start,
            prerelaxed=prerelax_counts.get("prerelaxed", 0),
            prerelax_failed=prerelax_counts.get("failed", 0),
        )


@dataclass
class ScreenShardMaker(Maker):
    """Predict one shard of a large pool and store the predictions (gpu category).

    The pool (every candidate not yet sent to the oracle, in ``candidate_id`` order)
    is split into ``n_shards`` contiguous shards; this job predicts shard
    ``shard_index`` with the previous round's ensemble and writes, per candidate, the
    members' energies and the hull energy (``prediction``) or why it cannot be
    scored (``unscorable``), in bulk. Candidates that already carry this ensemble's
    result are skipped, so a rerun writes nothing twice; the filter job then selects
    from every shard's results.
    """

    name: str = "screen"

    @job
    def make(self, config: CampaignConfig, round_index: int, shard_index: int,
             n_shards: int) -> dict[str, Any]:
        """Screen the shard; return counts (``written``, ``skipped``,
        ``unscorable``, ``seconds``)."""
        from pymongo import UpdateOne

        from flywheel.makers.filter.core import load_models
        from flywheel.makers.relax.core import chunk_ids
        from flywheel.settings import get_settings

        limit_threads()
        start = time.perf_counter()
        db = campaign_db(config)
        device = get_settings().resolved_device()
        model_round = round_index - 1
        every = [d["candidate_id"] for d in db.candidates.find(
            pool_query(db, round_index), {"candidate_id": 1}).sort("candidate_id", 1)]
        mine = chunk_ids(every, shard_index, n_shards)
        done = set(screened(db, round_index, model_round)) & set(mine)
        todo = [c for c in mine if c not in done]
        written = n_bad = 0
        if todo:
            with tempfile.TemporaryDirectory() as tmp:
                models = load_models(db.fetch_models(model_round, Path(tmp)), device,
                                     cueq=config.filter.cueq)
                pool = scorable_pool(db, config, round_index, models,
                                     current_hull(db, config), ids=todo)
                _counts, energies = predict_pool(db, config, pool, models,
                                                 model_round, device)
            # Filter on the unique key alone: the pool query already chose 'generated'
            # candidates, and the local server scans the collection for any filter
            # beyond an index (measured: 0.26 s per update vs 0.7 ms on 10^4).
            ops = [UpdateOne(db.q(candidate_id=cid), {"$set": {
                "prediction": {"members": [float(x) for x in energies[:, i]],
                               "hull_energy": float(pool.hull_e[i]),
                               "model_round": model_round}}})
                   for i, cid in enumerate(pool.ids)]
            ops += [UpdateOne(db.q(candidate_id=cid), {"$set": {
                "unscorable": {"reason": reason, "model_round": model_round}}})
                for cid, reason in pool.unscorable_ids.items()]
            db.bulk_write("candidates", ops)
            written, n_bad = len(pool.ids), len(pool.unscorable_ids)
        seconds = time.perf_counter() - start
        logger.info("round %d screen %d/%d: %d predicted, %d unscorable, %d done "
                    "before, %.1f s", round_index, shard_index + 1, n_shards, written,
                    n_bad, len(done), seconds)
        return {"shard": shard_index, "written": written, "unscorable": n_bad,
                "skipped": len(done), "seconds": seconds}
