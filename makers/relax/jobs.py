"""The oracle stage: relax a chunk of the round's selected candidates."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobflow import Maker, job

from flywheel.makers.common import campaign_db, limit_threads, structure_fields
from flywheel.makers.relax import run
from flywheel.makers.relax.core import chunk_ids

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.relax.core import OracleResult
    from flywheel.makers.schemas import RelaxOutput

logger = logging.getLogger(__name__)


def frames_to_bytes(frames: list) -> bytes:
    """Frames as extended-XYZ text (the format MACE trains on)."""
    from ase.io import write

    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    return buf.getvalue().encode()


def store_result(
    db: CampaignDB, cand: dict, result: OracleResult, round_index: int, oracle: str
) -> None:
    """Write frames first, then the material; a crash in between leaves no material,
    so the rerun relaxes again and replaces the orphaned frames.
    """
    cid = cand["candidate_id"]
    old = [f["_id"] for f in db.find_files("frames", candidate_id=cid)]
    db.delete_files("frames", old)
    if result.frames:
        db.put_file("frames", f"{cid}.extxyz", frames_to_bytes(result.frames),
                    candidate_id=cid, round=round_index, n_frames=len(result.frames))
    from monty.json import jsanitize

    s = result.structure
    fields = structure_fields(s)
    doc = {
        "campaign": db.campaign,
        "material_id": cid,
        "candidate_id": cid,
        "round": round_index,
        "generator": cand["generator"],
        "source": cand.get("source"),
        "parent_id": cand.get("parent_id"),
        "reference_id": cand.get("reference_id"),
        # 'filter' or 'audit' (uniform random pick); None for round 0.
        "selected_by": cand.get("selected_by"),
        "oracle": oracle,
        "elements": sorted(el.symbol for el in s.composition.elements),
        # jsanitize: relaxed structures carry numpy site properties (magmoms).
        "structure": jsanitize(s.as_dict()),
        # The hull energy: for VASP the MP2020-corrected energy (corrections applied
        # once, in the oracle); the raw DFT energy and adjustments are kept beside it.
        "energy": result.energy,
        "energy_per_atom": result.energy / len(s),
        "uncorrected_energy": result.details.get("uncorrected_energy", result.energy),
        "correction": result.details.get("correction", 0.0),
        "oracle_details": jsanitize(result.details),
        "converged": result.converged,
        "n_steps": result.n_steps,
        "n_frames": len(result.frames),
        "seconds": result.seconds,
        "prediction": cand.get("prediction"),
        "e_above_hull": None,
        "decomposition_energy": None,
        "stable": None,
        "discovery": False,
        # Judged by the hull job against the references and earlier results.
        "novelty": None,
        "known_id": None,
        **fields,
    }
    # The unique (campaign, material_id) index makes a duplicate oracle result
    # impossible; $setOnInsert keeps the first one if two workers ever raced.
    db.materials.update_one(
        db.q(material_id=cid), {"$setOnInsert": doc}, upsert=True
    )
    db.candidates.update_one(db.q(candidate_id=cid), {"$set": {"status": "relaxed"}})


@dataclass
class RelaxMaker(Maker):
    """Relax one chunk of the selected candidates with the configured oracle.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "relax"

    @job
    def make(
        self,
        config: CampaignConfig,
        round_index: int,
        selected_ids: list[str],
        chunk_index: int = 0,
        n_chunks: int = 1,
    ) -> RelaxOutput:
        """Relax the candidates of chunk ``chunk_index`` of ``n_chunks``.

        Candidates that already have an oracle result are skipped, so rerunning a
        chunk after a lost worker never runs the oracle twice for one candidate.
        """
        from pymatgen.core import Structure

        from flywheel.makers.schemas import RelaxOutput

        limit_threads()
        start = time.perf_counter()
        db = campaign_db(config)
        mine = chunk_ids(list(selected_ids), chunk_index, n_chunks)
        done = {
            d["material_id"]
            for d in db.materials.find(db.q(material_id={"$in": mine}), {"material_id": 1})
        }
        todo = [c for c in mine if c not in done]
        cands = {
            d["candidate_id"]: d
            for d in db.candidates.find(db.q(candidate_id={"$in": todo}))
        }
        todo = [c for c in todo if c in cands]
        structures = [Structure.from_dict(cands[c]["structure"]) for c in todo]
        evaluated: list[str] = []
        failed: dict[str, str] = {}

        def persist(i: int, result: OracleResult) -> None:
            cid = todo[i]
            if result.ok:
                store_result(db, cands[cid], result, round_index, config.oracle.backend)
                evaluated.append(cid)
            else:
                failed[cid] = result.error or "unknown failure"
                db.candidates.update_one(
                    db.q(candidate_id=cid),
                    {"$set": {"status": "failed", "failure": failed[cid]}},
                )

        if structures:
            run.run_oracle(structures, config.oracle, on_result=persist)
        return RelaxOutput(
            round=round_index,
            evaluated=evaluated,
            skipped=sorted(done),
            failed=failed,
            seconds=time.perf_counter() - start,
        )
