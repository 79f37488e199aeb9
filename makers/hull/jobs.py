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


def _same(old: object, new: object) -> bool:
    if isinstance(new, float) and isinstance(old, float):
        return abs(old - new) <= 1e-12
    return old == new


def polymorph_energies(
    entries: list[tuple[str, str, float]],
) -> dict[str, list[tuple[float, str]]]:
    """Reduced formula → (energy per atom, id) of every hull entry, lowest first."""
    from pymatgen.core import Composition

    out: dict[str, list[tuple[float, str]]] = {}
    for entry_id, formula, energy in entries:
        out.setdefault(Composition(formula).reduced_formula, []).append(
            (energy, entry_id))
    return {k: sorted(v) for k, v in out.items()}


def hull_margin(
    record: Any, entry_id: str, energy_per_atom: float,
    polymorphs: list[tuple[float, str]],
) -> float | None:
    """How far an entry lies below the hull of every *other* entry (eV/atom; ≤ 0 on
    the hull, None when not on it).

    The phase-separation energy (``decomposition_energy`` of a stable entry, GNoME's
    definition) leaves out every entry of the same composition, so a new polymorph
    20 meV/atom below a known one can show −70 meV/atom. The margin also counts the
    other polymorphs: ``max(phase separation, E − E_best other polymorph)``.
    """
    if not record.stable:
        return None
    others = [e for e, i in polymorphs if i != entry_id]
    margin = record.decomposition_energy
    if others:
        margin = max(margin, energy_per_atom - others[0])
    return float(margin)


@dataclass
class HullMaker(Maker):
    """Judge the round's oracle results: novelty, then hull positions.

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
        """Store the novelty of new results, then update ``e_above_hull``,
        ``decomposition_energy``, ``stable`` and ``discovery`` of every material.

        ``relaxed`` is the oracle stage's output (it orders the graph; what changed
        is read from the database, so a missing chunk loses nothing).
        """
        from collections import Counter

        from pymongo import UpdateOne

        from flywheel.makers.hull.core import hull_entries, touched_systems
        from flywheel.makers.hull.engine import HullEngine
        from flywheel.makers.hull.novelty import is_discovery, judge_new_materials
        from flywheel.makers.schemas import HullOutput

        db = campaign_db(config)
        tol = config.hull.on_hull_tolerance
        novelty = judge_new_materials(db)
        docs = list(db.materials.find(
            db.q(),
            {"material_id": 1, "formula": 1, "chemsys": 1, "round": 1,
             "generator": 1, "stable": 1, "e_above_hull": 1,
             "decomposition_energy": 1, "novelty": 1, "discovery": 1,
             "energy_per_atom": 1, "hull_margin": 1},
        ))
        # The whole campaign goes into the engine (exact, ~1 s per 10^4 entries; see
        # docs/hull.md); only documents whose hull fields changed are rewritten.
        entries = hull_entries(db, config)
        engine = HullEngine(entries, tolerance=tol)
        polymorphs = polymorph_energies(entries)
        changed = {d["chemsys"] for d in docs if d["round"] == round_index}
        ops, new, updated = [], [], 0
        unscored: Counter[str] = Counter()
        for d in docs:
            rec = engine.results.get(d["material_id"])
            if rec is None:
                if d["round"] == round_index:
                    unscored[engine.skipped.get(d["material_id"], "no hull")] += 1
                continue
            margin = hull_margin(rec, d["material_id"], d["energy_per_atom"],
                                 polymorphs.get(d["formula"], []))
            discovery = is_discovery(d["generator"], d.get("novelty"), margin, tol)
            if discovery and not d.get("discovery"):
                new.append(d["material_id"])
            fields = {"e_above_hull": rec.e_above_hull,
                      "decomposition_energy": rec.decomposition_energy,
                      "hull_margin": margin, "stable": rec.stable,
                      "discovery": discovery}
            if all(_same(d.get(k), v) for k, v in fields.items()):
                continue
            updated += 1
            ops.append(UpdateOne(db.q(material_id=d["material_id"]), {"$set": fields}))
        db.bulk_write("materials", ops)
        if unscored:
            logger.warning("round %d: %d results without a hull: %s", round_index,
                           sum(unscored.values()), dict(unscored))
        return HullOutput(
            round=round_index,
            systems=sorted(touched_systems({d["chemsys"] for d in docs}, changed)),
            updated=updated,
            n_stable=db.materials.count_documents(db.q(stable=True)),
            new_discoveries=sorted(new),
            novelty=dict(novelty),
            unscored=sum(unscored.values()),
            unscored_reasons=dict(unscored),
        )
