"""The hull stage: update the hull of every chemical system the round touched."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flywheel.makers.common import campaign_db
from jobflow import Maker, job

if TYPE_CHECKING:
    from flywheel.makers.schemas import HullOutput

    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)


def _same(old: object, new: object) -> bool:
    if isinstance(new, float) and isinstance(old, float):
        return abs(old - new) <= 1e-12
    return old == new


def reference_entries(db) -> list[tuple[str, str, float]]:
    """The campaign's reference entries (``hull.references``) as hull-engine entries,
    ids prefixed ``ref:`` so they never collide with material ids.
    """
    return [
        (f"ref:{d['entry_id']}", d["formula_full"], d["energy_per_atom"])
        for d in db.references.find(
            db.q(), {"entry_id": 1, "formula_full": 1, "energy_per_atom": 1}
        )
    ]


@dataclass
class HullMaker(Maker):
    """Recompute hull positions after a round's oracle results.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "hull"

    @job
    def make(
        self, config: CampaignConfig, round_index: int, relaxed: Any = None
    ) -> HullOutput:
        """Update ``e_above_hull``, ``decomposition_energy``, ``stable`` and
        ``discovery`` of the materials in every touched chemical system.

        ``relaxed`` are the oracle chunks' outputs (they order the graph; the set of
        changed systems is read from the database so a missing chunk loses nothing).
        """
        from flywheel.makers.hull.core import touched_systems
        from flywheel.makers.hull.engine import HullEngine
        from flywheel.makers.schemas import HullOutput
        from pymongo import UpdateOne

        db = campaign_db(config)
        docs = list(db.materials.find(
            db.q(),
            {"material_id": 1, "formula": 1, "energy_per_atom": 1, "chemsys": 1,
             "round": 1, "generator": 1, "stable": 1, "e_above_hull": 1,
             "decomposition_energy": 1},
        ))
        # The whole campaign goes into the engine (exact, ~1 s per 10^4 entries; see
        # docs/hull.md); only documents whose hull fields changed are rewritten.
        engine = HullEngine(
            [(d["material_id"], d["formula"], d["energy_per_atom"]) for d in docs]
            + reference_entries(db),
            tolerance=config.hull.on_hull_tolerance,
        )
        changed = {d["chemsys"] for d in docs if d["round"] == round_index}
        ops, new, updated = [], [], 0
        for d in docs:
            rec = engine.results.get(d["material_id"])
            if rec is None:
                continue
            discovery = rec.stable and d["generator"] != "seed"
            if discovery and not d.get("stable"):
                new.append(d["material_id"])
            fields = {"e_above_hull": rec.e_above_hull,
                      "decomposition_energy": rec.decomposition_energy,
                      "stable": rec.stable, "discovery": discovery}
            if all(_same(d.get(k), v) for k, v in fields.items()):
                continue
            updated += 1
            ops.append(UpdateOne(db.q(material_id=d["material_id"]), {"$set": fields}))
        for k in range(0, len(ops), 500):
            db.materials.bulk_write(ops[k : k + 500], ordered=False)
        if engine.skipped:
            logger.warning("no hull for %d entries: %s", len(engine.skipped),
                           sorted(set(engine.skipped.values()))[:5])
        n_stable = db.materials.count_documents(db.q(stable=True))
        return HullOutput(
            round=round_index,
            systems=sorted(touched_systems({d["chemsys"] for d in docs}, changed)),
            updated=updated,
            n_stable=n_stable,
            new_discoveries=sorted(new),
        )
