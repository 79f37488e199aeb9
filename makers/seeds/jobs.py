"""Round 0: the seed set the oracle relaxes before any model exists."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flywheel.makers.common import campaign_db
from jobflow import Maker, job

if TYPE_CHECKING:
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.schemas import GenerateOutput

    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)


def store_references(db: CampaignDB, config: CampaignConfig) -> dict[str, int]:
    """Load ``hull.references`` (and the MP API when ``hull.mp_api``) into the
    campaign's ``references`` collection; returns counts loaded and rejected.

    Runs once, in round 0; entries are upserted by id so a rerun does not duplicate.
    Entries outside the campaign's elements are not stored.
    """
    from flywheel.makers.common import structure_fields
    from flywheel.makers.seeds.mp_api import mp_api_entries
    from flywheel.makers.seeds.sources import load_entries
    from pymongo import UpdateOne

    compat = None if config.hull.compatibility == "none" else config.hull.compatibility
    elements = config.chemistry.elements
    reports = [(str(p), load_entries(p, compat, elements=elements,
                                     require_structure=False))
               for p in config.hull.references]
    if config.hull.mp_api:
        reports.append(("mp_api", mp_api_entries(elements, compatibility=compat)))
    counts = {"references": 0, "references_rejected": 0}
    for source, report in reports:
        if report.rejected:
            logger.warning("%s: %s", source, report.summary())
        counts["references_rejected"] += len(report.rejected)
        ops = []
        for i, entry in enumerate(report):
            comp = entry.composition
            entry_id = str(entry.entry_id or f"{source}[{i}]")
            doc = {
                "campaign": db.campaign, "entry_id": entry_id, "source": source,
                "energy": float(entry.energy),
                "energy_per_atom": float(entry.energy_per_atom),
                "correction": float(entry.correction),
            }
            if getattr(entry, "structure", None) is not None:
                doc.update(structure_fields(entry.structure))
            else:
                els = sorted(el.symbol for el in comp.elements)
                doc.update(formula=comp.reduced_formula, chemsys="-".join(els),
                           elements=els, nelements=len(els), nsites=int(comp.num_atoms))
            doc["formula_full"] = comp.formula
            ops.append(UpdateOne(db.q(entry_id=entry_id), {"$set": doc}, upsert=True))
        for k in range(0, len(ops), 1000):
            db.references.bulk_write(ops[k : k + 1000], ordered=False)
        counts["references"] += len(ops)
    return counts


def seed_candidates(config: CampaignConfig) -> list:
    """Seeds in priority order: elemental references, the user's seed files, then
    built-in binary prototypes (see :func:`SeedMaker.make` for the cap).
    """
    from flywheel.makers.generate.core import Candidate
    from flywheel.makers.seeds.core import builtin_seeds

    elements, prototypes, files = [], [], []
    if config.seeds.builtin:
        for seed in builtin_seeds(
            config.chemistry.elements,
            max_elements=min(2, config.chemistry.max_elements),
            max_sites=config.chemistry.max_sites,
            max_seeds=config.seeds.max_seeds,
        ):
            cand = Candidate(seed.structure, generator="seed", parent_id=None,
                             substitution=None, source=seed.source)
            (elements if len(seed.structure.composition) == 1 else prototypes).append(
                cand
            )
    from flywheel.makers.seeds.sources import load_structures

    for path in config.seeds.files:
        report = load_structures(path, elements=config.chemistry.elements)
        if report.rejected:
            logger.warning("%s: %s", path, report.summary())
        for label, structure in report:
            files.append(
                Candidate(structure, generator="seed", parent_id=None,
                          substitution=None, source=f"file:{label}")
            )
    return elements + files + prototypes


@dataclass
class SeedMaker(Maker):
    """Store the seed structures of round 0 as selected candidates.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "seeds"

    @job
    def make(self, config: CampaignConfig) -> GenerateOutput:
        """Check, deduplicate and store the seeds; all are sent to the oracle."""
        from flywheel.makers.generate.admit import admit_candidates

        db = campaign_db(config)
        if config.hull.references or config.hull.mp_api:
            counts = store_references(db, config)
            logger.info("hull references: %(references)d stored, "
                        "%(references_rejected)d rejected", counts)
        return admit_candidates(
            db, 0, seed_candidates(config),
            max_sites=config.chemistry.max_sites, status="selected",
            budget={"seed": config.seeds.max_seeds},
        )
