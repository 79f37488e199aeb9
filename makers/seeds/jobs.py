"""Round 0: the seed set the oracle relaxes before any model exists."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flywheel.makers.common import campaign_db
from jobflow import Maker, job

if TYPE_CHECKING:
    from flywheel.makers.schemas import GenerateOutput

    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)


def seed_candidates(config: CampaignConfig) -> list:
    """Seeds in priority order: elemental references, the user's seed files, then
    built-in binary prototypes (see :func:`SeedMaker.make` for the cap).
    """
    from flywheel.makers.generate.core import Candidate
    from flywheel.makers.seeds.core import builtin_seeds, load_seed_file

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
    allowed = set(config.chemistry.elements)
    for path in config.seeds.files:
        for i, structure in enumerate(load_seed_file(path)):
            extra = {el.symbol for el in structure.composition.elements} - allowed
            if extra:
                logger.warning(
                    "%s[%d]: elements %s are outside chemistry.elements; skipped",
                    path, i, sorted(extra),
                )
                continue
            files.append(
                Candidate(structure, generator="seed", parent_id=None,
                          substitution=None, source=f"file:{path.name}[{i}]")
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
        return admit_candidates(
            db, 0, seed_candidates(config),
            max_sites=config.chemistry.max_sites, status="selected",
            budget={"seed": config.seeds.max_seeds},
        )
