"""The hull stage: update the hull of every chemical system the round touched."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from flywheel.makers.common import campaign_db

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.makers.schemas import HullOutput

logger = logging.getLogger(__name__)


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
        from pymatgen.core import Composition
        from pymatgen.entries.computed_entries import ComputedEntry
        from pymongo import UpdateOne

        from flywheel.makers.hull.core import touched_systems, update_hull
        from flywheel.makers.schemas import HullOutput

        db = campaign_db(config)
        docs = list(db.materials.find(
            db.q(),
            {"material_id": 1, "formula": 1, "energy_per_atom": 1, "chemsys": 1,
             "round": 1, "generator": 1, "stable": 1},
        ))
        entries = []
        for d in docs:
            comp = Composition(d["formula"])
            entries.append(ComputedEntry(comp, d["energy_per_atom"] * comp.num_atoms,
                                         entry_id=d["material_id"]))
        changed = {d["chemsys"] for d in docs if d["round"] == round_index}
        results = update_hull(entries, changed, tolerance=config.hull.on_hull_tolerance)
        by_id = {d["material_id"]: d for d in docs}
        ops, new = [], []
        for mid, r in results.items():
            d = by_id[mid]
            discovery = r.stable and d["generator"] != "seed"
            if discovery and not d.get("stable"):
                new.append(mid)
            ops.append(UpdateOne(db.q(material_id=mid), {"$set": {
                "e_above_hull": r.e_above_hull,
                "decomposition_energy": r.decomposition_energy,
                "stable": r.stable,
                "discovery": discovery,
            }}))
        for k in range(0, len(ops), 500):
            db.materials.bulk_write(ops[k : k + 500], ordered=False)
        n_stable = db.materials.count_documents(db.q(stable=True))
        return HullOutput(
            round=round_index,
            systems=sorted(touched_systems({d["chemsys"] for d in docs}, changed)),
            updated=len(results),
            n_stable=n_stable,
            new_discoveries=sorted(new),
        )
