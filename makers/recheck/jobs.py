"""The r²SCAN re-check as a jobflow flow: select, relax in chunks, summarize.

``flywheel recheck CAMPAIGN.yaml`` submits it (after or during a campaign) to the same
LaunchPad; its fireworks are cpu jobs like the oracle's. Results go to the
``fidelity`` collection (one document per material and fidelity, so a rerun never
repeats a calculation), the verdicts to ``materials.r2scan`` and a summary document to
``rechecks``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flywheel.makers.common import campaign_db, limit_threads
from jobflow import Maker, Response, job

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
        from flywheel.makers.relax.jobs import chunk_ids

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
        if ops:
            db.materials.bulk_write(ops, ordered=False)
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


@dataclass
class RecheckMaker(Maker):
    """Select the discoveries and their competing phases, then add the relax chunks
    and the summary to the workflow.

    Parameters
    ----------
    name
        Job name.
    max_materials
        Discoveries re-checked at most (most negative decomposition energy first).
    chunk_size
        Relaxations per FireWorks job.
    """

    name: str = "recheck select"
    max_materials: int = 50
    chunk_size: int = 1

    @job
    def make(self, config: CampaignConfig) -> Response:
        """Choose the set from the campaign's current hull."""
        from jobflow import Flow

        from flywheel.makers.recheck.core import select_recheck
        from flywheel.makers.common import CPU
        from flywheel.workflows.round import set_category

        db = campaign_db(config)
        materials = list(db.materials.find(
            db.q(), {"material_id": 1, "chemsys": 1, "stable": 1, "discovery": 1,
                     "decomposition_energy": 1}))
        discoveries, competitors = select_recheck(materials, self.max_materials)
        ids = discoveries + competitors
        n_chunks = max(1, -(-len(ids) // self.chunk_size)) if ids else 0
        chunks = [
            set_category(RecheckRelaxMaker().make(config, ids, i, n_chunks), CPU,
                         config.name, None, STAGE)
            for i in range(n_chunks)
        ]
        summary = set_category(
            RecheckSummaryMaker().make(config, discoveries, [c.output for c in chunks]),
            CPU, config.name, None, STAGE, tolerate_failed_parents=True,
        )
        logger.info("re-checking %d discoveries with %d competing phases",
                    len(discoveries), len(competitors))
        return Response(
            output={"discoveries": discoveries, "competitors": competitors},
            # No flow output: jobflow would add an uncategorised store_inputs job that
            # no cpu/gpu fworker runs (nothing reads this job's output anyway).
            replace=Flow([*chunks, summary], name=f"{config.name} r2SCAN re-check"),
        )


def recheck_flow(config: CampaignConfig):
    """The re-check flow for ``config`` (one select job that expands at run time)."""
    from flywheel.makers.common import CPU
    from flywheel.workflows.round import set_category

    maker = RecheckMaker(max_materials=config.recheck.max_materials,
                         chunk_size=config.recheck.chunk_size)
    return set_category(maker.make(config), CPU, config.name, None, "recheck select")
