"""The r²SCAN re-check as a jobflow flow: select, relax in chunks, summarize.

``flywheel recheck CAMPAIGN.yaml`` submits it (after or during a campaign) to the same
LaunchPad; its fireworks are cpu jobs like the oracle's. Results go to the
``fidelity`` collection (one document per material and fidelity, so a rerun never
repeats a calculation), the verdicts to ``materials.r2scan`` and a summary document to
``rechecks`` (the jobs: :mod:`flywheel.makers.recheck.jobs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobflow import Flow, Maker, Response, job

from flywheel.db.tags import CPU, tag_job
from flywheel.makers.common import campaign_db
from flywheel.makers.recheck.jobs import (
    STAGE,
    RecheckRelaxMaker,
    RecheckSummaryMaker,
)

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)


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
        from flywheel.makers.recheck.core import select_recheck

        db = campaign_db(config)
        materials = list(db.materials.find(
            db.q(), {"material_id": 1, "chemsys": 1, "stable": 1, "discovery": 1,
                     "decomposition_energy": 1}))
        discoveries, competitors = select_recheck(materials, self.max_materials)
        ids = discoveries + competitors
        n_chunks = max(1, -(-len(ids) // self.chunk_size)) if ids else 0
        chunks = [
            tag_job(RecheckRelaxMaker().make(config, ids, i, n_chunks), CPU,
                    config.name, None, STAGE)
            for i in range(n_chunks)
        ]
        summary = tag_job(
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
    maker = RecheckMaker(max_materials=config.recheck.max_materials,
                         chunk_size=config.recheck.chunk_size)
    return tag_job(maker.make(config), CPU, config.name, None, "recheck select")
