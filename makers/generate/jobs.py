"""The generation stage of rounds ≥ 1."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from flywheel.makers.common import campaign_db

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.makers.schemas import GenerateOutput

logger = logging.getLogger(__name__)


@dataclass
class GenerateMaker(Maker):
    """Generate this round's candidates from the campaign's stable materials.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "generate"

    @job
    def make(
        self, config: CampaignConfig, round_index: int, previous: Any = None
    ) -> GenerateOutput:
        """Run every enabled generator, then check, dedup and store the candidates.

        ``previous`` is the output of the job this one must follow (it orders the
        graph; its value is not used).
        """
        from pymatgen.core import Structure

        from flywheel.makers.generate.admit import admit_candidates
        from flywheel.makers.generate.core import substitution_candidates

        db = campaign_db(config)
        parents = [
            (doc["material_id"], Structure.from_dict(doc["structure"]))
            for doc in db.materials.find(
                db.q(stable=True), {"material_id": 1, "structure": 1}
            ).sort("material_id", 1)
        ]
        candidates = []
        sub = config.generate.substitution
        if sub.enabled and sub.budget > 0:
            candidates += substitution_candidates(
                parents,
                config.chemistry.elements,
                threshold=sub.threshold,
                max_elements=config.chemistry.max_elements,
                max_sites=config.chemistry.max_sites,
            )
        logger.info("round %d: %d parents → %d raw candidates",
                    round_index, len(parents), len(candidates))
        return admit_candidates(
            db, round_index, candidates,
            max_sites=config.chemistry.max_sites,
            budget={"substitution": sub.budget},
            seed=config.generate.seed,
        )
