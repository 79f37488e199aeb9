"""The r²SCAN re-check's jobs: relax a chunk, summarize.

The flow that selects the set and adds these jobs is
:mod:`flywheel.workflows.recheck`. Results go to the
``fidelity`` collection (one document per material and fidelity, so a rerun never
repeats a calculation), the verdicts to ``materials.r2scan`` and a summary document to
``rechecks``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from flywheel.makers.common import campaign_db, limit_threads

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)

FIDELITY = "r2scan"
STAGE = "recheck"


@dataclass
class RecheckRelaxMaker(Maker):
    """Relax one chunk of the re-check set at r²SCAN fidelity."""

    name: str = "recheck relax"

    @job
    def make(self, config: CampaignConfig, ids: list[str], chunk_index: int = 0,
             n_chunks: int = 1) -> dict[str, Any]:
        """Relax the materials of chunk ``chunk_index``, skipping those already done."""
        from monty.json import jsanitize
        from pymatgen.core import Structure

        from flywheel.makers.common import structure_fields
        from flywheel.makers.relax import run
        from flywheel.makers.relax.core import chunk_ids

        limit_threads()
        db = campaign_db(config)
        mine = chunk_ids(list(ids), chunk_index, n_chunks)
        done = {d["material_id"] for d in db.fidelity.find(
            db.q(material_id={"$in": mine}, fidelity=FIDELITY), {"material_id": 1})}
        docs = {d["material_id"]: d for d in db.materials.find(
            db.q(material_id={"$in": [m for m in mine if m not in done]}))}
        todo = [m for m in mine if m in docs]
        failed: dict[str, str] = {}
        evaluated: list[str] = []

        def persist(i: int, result: run.OracleResult) -> None:
            mid = todo[i]
            if not result.ok:
                failed[mid] = result.error or "unknown failure"
                return
            s = result.structure
            db.fidelity.update_one(
                db.q(material_id=mid, fidelity=FIDELITY),
                {"$setOnInsert": {
                    "campaign": db.campaign, "material_id": mid, "fidelity": FIDELITY,
                    "oracle": config.oracle.backend,
                    "structure": jsanitize(s.as_dict()),
                    "energy": result.energy,
                    "energy_per_atom": result.energy / len(s),
                    "converged": result.converged,
                    "seconds": result.seconds,
                    "oracle_details": jsanitize(result.details),
                    **structure_fields(s),
                }},
                upsert=True,
            )
            evaluated.append(mid)

        start = time.perf_counter()
        if todo:
            structures = [Structure.from_dict(docs[m]["structure"]) for m in todo]
            run.run_recheck_oracle(structures, config.oracle, on_result=persist)
        return {"evaluated": evaluated, "skipped": sorted(done), "failed": failed,
                "seconds": time.perf_counter() - start}


@dataclass
class RecheckSummaryMaker(Maker):
    """Judge each discovery on the r²SCAN hull and store the verdicts."""

    name: str = "recheck summary"

    @job
    def make(self, config: CampaignConfig, discoveries: list[str],
             chunks: Any = None) -> dict[str, Any]:
        """Summarize; ``chunks`` only orders this job after the relaxations."""
        from pymongo import UpdateOne

        from flywheel.makers.recheck.core import summarize_recheck

        db = campaign_db(config)
        disc = list(db.materials.find(
            db.q(material_id={"$in": discoveries}),
            {"material_id": 1, "formula": 1, "chemsys": 1, "nelements": 1,
             "decomposition_energy": 1}))
        recomputed = list(db.fidelity.find(
            db.q(fidelity=FIDELITY),
            {"material_id": 1, "formula": 1, "energy_per_atom": 1}))
        summary = summarize_recheck(disc, recomputed, config.hull.on_hull_tolerance)
        ops = [UpdateOne(db.q(material_id=mid), {"$set": {FIDELITY: rec}})
               for mid, rec in summary["materials"].items()]
        db.bulk_write("materials", ops)
        doc = {k: v for k, v in summary.items() if k != "materials"}
        db.rechecks.update_one(
            db.q(fidelity=FIDELITY),
            {"$set": {**doc, "campaign": db.campaign, "fidelity": FIDELITY,
                      "oracle": config.oracle.backend, "time": time.time()}},
            upsert=True,
        )
        logger.info("r2SCAN re-check: %s of %s discoveries survive",
                    summary["n_survived"], summary["n_checked"])
        return doc
