"""Round 0: the seed set the oracle relaxes before any model exists."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobflow import Maker, job

from flywheel.makers.common import campaign_db

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.schemas import GenerateOutput

logger = logging.getLogger(__name__)


def reference_candidates(db: CampaignDB, config: CampaignConfig) -> list:
    """The references round 0 recomputes with the oracle, as candidates
    (generator ``reference``; :func:`~flywheel.makers.seeds.references.
    recompute_selection`).
    """
    from pymatgen.core import Structure

    from flywheel.makers.generate.core import Candidate
    from flywheel.makers.seeds.references import recompute_selection

    return [
        Candidate(Structure.from_dict(d["structure"]), generator="reference",
                  source=f"reference:{d['entry_id']}", reference_id=d["entry_id"])
        for d in recompute_selection(db, config)
    ]


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
    """Store round 0's structures as selected candidates: the recomputed references
    (``hull.recompute_references``), then the seeds.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "seeds"

    @job
    def make(self, config: CampaignConfig) -> GenerateOutput:
        """Load the references, then check, deduplicate and store the references to
        recompute and the seeds; all are sent to the oracle.

        Elemental references and recomputed references are bounded by neither
        ``chemistry.max_sites`` nor ``seeds.max_seeds`` (those bound candidates).
        """
        from flywheel.makers.generate.admit import admit_candidates
        from flywheel.makers.seeds.references import (
            missing_elemental_references,
            store_references,
        )

        db = campaign_db(config)
        candidates = []
        if config.hull.references or config.hull.mp_api:
            counts = store_references(db, config)
            logger.info("hull references: %(references)d stored (%(with_structure)d "
                        "with structures), %(references_rejected)d rejected", counts)
            if config.recomputes_references():
                candidates += reference_candidates(db, config)
        missing = missing_elemental_references(config)
        if missing:
            raise RuntimeError(
                f"no elemental reference for {', '.join(missing)}: turn on "
                "seeds.builtin, or add one-element structures to seeds.files or "
                "hull.references"
            )
        candidates += seed_candidates(config)
        return admit_candidates(
            db, 0, candidates,
            max_sites=config.chemistry.max_sites, status="selected",
            budget={"seed": config.seeds.max_seeds}, against_references=False,
        )
