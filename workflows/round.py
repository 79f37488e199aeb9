"""One active-learning round as a jobflow Flow.

Round 0 relaxes the seeds (and the recomputed hull references); every later round is
generate → filter → relax chunks → hull → train → close. The close job (see :mod:`flywheel.workflows.campaign`) decides
whether to add the next round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Maker, Response, job

from flywheel.db.tags import CPU, GPU, tag_job
from flywheel.makers.filter.jobs import FilterMaker, ScreenShardMaker
from flywheel.makers.generate.jobs import GenerateMaker
from flywheel.makers.hull.jobs import HullMaker
from flywheel.makers.relax.jobs import RelaxMaker
from flywheel.makers.seeds.jobs import SeedMaker
from flywheel.makers.train.jobs import TrainMaker

if TYPE_CHECKING:
    from jobflow import Job

    from flywheel.config import CampaignConfig


@job
def relax_selection(
    config: CampaignConfig, round_index: int, selected_ids: list[str],
    relax_maker: RelaxMaker,
) -> Response:
    """Add the round's oracle jobs, ``ceil(n / oracle.chunk_size)`` of them, as a
    detour before the hull job.

    The number of relaxations is known only at run time (the filter's selection, or
    the seeds and recomputed references of round 0), so the chunks are made here;
    FireWorks makes the hull job wait for all of them (a fizzled chunk does not block
    it: the hull job tolerates failed parents).
    """
    ids = list(selected_ids or [])
    n_chunks = math.ceil(len(ids) / config.oracle.chunk_size)
    chunks = []
    for k in range(n_chunks):
        chunks.append(tag_job(
            relax_maker.make(config, round_index, ids, k, n_chunks), CPU, config.name,
            round_index, "relax",
            name=f"{config.name} r{round_index} relax {k + 1}/{n_chunks}",
        ))
    output = {"selected": len(ids), "chunks": n_chunks}
    if not chunks:
        return Response(output=output)
    return Response(output=output, detour=Flow(chunks, name=f"{config.name} "
                                               f"r{round_index} oracle"))


@job
def screen_pool(config: CampaignConfig, round_index: int, generated: Any = None
                ) -> Response:
    """Add ``ceil(pool / filter.shard_size)`` screening jobs (gpu) as a detour before
    the filter job, which then selects from their stored predictions."""
    from flywheel.makers.common import campaign_db
    from flywheel.makers.filter.jobs import pool_query

    db = campaign_db(config)
    n_pool = db.candidates.count_documents(pool_query(db, round_index))
    n_shards = math.ceil(n_pool / config.filter.shard_size)
    shards = [tag_job(ScreenShardMaker().make(config, round_index, k, n_shards), GPU,
                      config.name, round_index, "screen",
                      name=f"{config.name} r{round_index} screen {k + 1}/{n_shards}")
              for k in range(n_shards)]
    output = {"pool": n_pool, "shards": n_shards}
    if not shards:
        return Response(output=output)
    return Response(output=output, detour=Flow(shards, name=f"{config.name} "
                                               f"r{round_index} screening"))


@dataclass
class RoundMaker(Maker):
    """Build the flow of one round from the stage Makers.

    Parameters
    ----------
    name
        Flow name prefix.
    seeds, generate, filter, relax, hull, train
        The stage Makers.
    """

    name: str = "round"
    seeds: SeedMaker = field(default_factory=SeedMaker)
    generate: GenerateMaker = field(default_factory=GenerateMaker)
    filter: FilterMaker = field(default_factory=FilterMaker)
    relax: RelaxMaker = field(default_factory=RelaxMaker)
    hull: HullMaker = field(default_factory=HullMaker)
    train: TrainMaker = field(default_factory=TrainMaker)

    def make(self, config: CampaignConfig, round_index: int) -> Flow:
        """The jobs of round ``round_index`` (without the closing job).

        Round 0: seeds → oracle → hull → train; later rounds: generate → filter →
        oracle → hull → train. The oracle jobs are added at run time by
        :func:`relax_selection`. The flow's output maps ``generated``, ``selected``,
        ``hull`` and ``trained`` to the outputs of the generation (or seed), filter
        (round 0: seed), hull and training jobs.
        """
        name, r = config.name, round_index

        def tag(job: Job, category: str, stage: str, **kwargs: Any) -> Job:
            return tag_job(job, category, name, r, stage, name=f"{name} r{r} {stage}",
                           **kwargs)

        if round_index == 0:
            first = tag(self.seeds.make(config), CPU, "seeds")
            jobs = [first]
            gen_out = sel_out = first.output
        else:
            gen = tag(self.generate.make(config, round_index), CPU, "generate")
            jobs = [gen]
            before_filter = gen.output
            if config.filter.shard_size:
                plan = tag(screen_pool(config, round_index, gen.output), CPU,
                           "screen plan")
                jobs.append(plan)
                before_filter = plan.output
            filt = tag(self.filter.make(config, round_index, before_filter), GPU,
                       "filter")
            jobs.append(filt)
            gen_out, sel_out = gen.output, filt.output
        relax = tag(relax_selection(config, round_index, sel_out.selected_ids,
                                    self.relax), CPU, "oracle")
        hull = tag(self.hull.make(config, round_index, relax.output), CPU, "hull",
                   tolerate_failed_parents=True)
        train = tag(self.train.make(config, round_index, hull.output), GPU, "train")
        jobs += [relax, hull, train]
        return Flow(
            jobs,
            output={"generated": gen_out, "selected": sel_out, "hull": hull.output,
                    "trained": train.output},
            name=f"{name} round {round_index}",
        )
