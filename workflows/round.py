"""One active-learning round as a jobflow Flow.

Round 0 relaxes the seeds; every later round is generate → filter → relax chunks →
hull → train → close. The close job (see :mod:`flywheel.workflows.campaign`) decides
whether to add the next round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flywheel.makers.common import CPU, GPU
from flywheel.makers.filter.jobs import FilterMaker
from flywheel.makers.generate.jobs import GenerateMaker
from flywheel.makers.hull.jobs import HullMaker
from flywheel.makers.relax.jobs import RelaxMaker
from flywheel.makers.seeds.jobs import SeedMaker
from flywheel.makers.train.jobs import TrainMaker
from jobflow import Flow, Maker

if TYPE_CHECKING:
    from jobflow import Job

    from flywheel.config import CampaignConfig


def set_category(
    job: Job, category: str, campaign: str | None = None, round_index: int | None = None,
    stage: str | None = None, *, tolerate_failed_parents: bool = False,
) -> Job:
    """Tag a job with its FireWorks category (``cpu`` or ``gpu``) for the fworkers.

    The ``flywheel`` spec entry (campaign, round, stage) lets ``flywheel status`` count
    fireworks per round and stage straight from the LaunchPad. With
    ``tolerate_failed_parents`` the job runs even if a parent fizzled, receiving None
    for that parent's output (the hull job: a failed oracle chunk must not block the
    round).
    """
    from jobflow import OnMissing

    manager: dict = {"_category": category}
    if campaign is not None:
        manager["flywheel"] = {"campaign": campaign, "round": round_index, "stage": stage}
    config: dict = {"manager_config": manager, "pass_manager_config": False}
    if tolerate_failed_parents:
        manager["_allow_fizzled_parents"] = True
        config["on_missing_references"] = OnMissing.NONE
    # dynamic=False and pass_manager_config=False: jobflow would otherwise stamp this
    # job's category and round onto every job it adds at run time (the next round's
    # gpu jobs included).
    job.update_config(config, dynamic=False)
    return job


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

    def n_chunks(self, config: CampaignConfig, n_selected: int) -> int:
        """Oracle jobs per round: ``ceil(n / oracle.chunk_size)``, at least one."""
        return max(1, math.ceil(n_selected / config.oracle.chunk_size))

    def make(self, config: CampaignConfig, round_index: int) -> Flow:
        """The jobs of round ``round_index`` (without the closing job).

        The flow's output maps ``generated``, ``hull`` and ``trained`` to the outputs of
        the generation (or seed), hull and training jobs.
        """
        jobs = []
        if round_index == 0:
            first = set_category(self.seeds.make(config), CPU, config.name, 0, "seeds")
            first.name = f"{config.name} r0 seeds"
            jobs.append(first)
            gen_out = first.output
            selected = first.output.selected_ids
            # Round 0 relaxes every seed; seeds.max_seeds bounds their number.
            n_sel = config.seeds.max_seeds
        else:
            gen = set_category(
                self.generate.make(config, round_index), CPU, config.name, round_index,
                "generate",
            )
            gen.name = f"{config.name} r{round_index} generate"
            filt = set_category(
                self.filter.make(config, round_index, gen.output), GPU, config.name,
                round_index, "filter",
            )
            filt.name = f"{config.name} r{round_index} filter"
            jobs += [gen, filt]
            gen_out = gen.output
            selected = filt.output.selected_ids
            n_sel = config.filter.budget
        n_chunks = self.n_chunks(config, n_sel)
        relax_jobs = []
        for k in range(n_chunks):
            rj = set_category(
                self.relax.make(config, round_index, selected, k, n_chunks), CPU,
                config.name, round_index, "relax",
            )
            rj.name = f"{config.name} r{round_index} relax {k + 1}/{n_chunks}"
            relax_jobs.append(rj)
        hull = set_category(
            self.hull.make(config, round_index, [j.output for j in relax_jobs]), CPU,
            config.name, round_index, "hull", tolerate_failed_parents=True,
        )
        hull.name = f"{config.name} r{round_index} hull"
        train = set_category(
            self.train.make(config, round_index, hull.output), GPU, config.name,
            round_index, "train",
        )
        train.name = f"{config.name} r{round_index} train"
        jobs += [*relax_jobs, hull, train]
        return Flow(
            jobs,
            output={"generated": gen_out, "hull": hull.output, "trained": train.output},
            name=f"{config.name} round {round_index}",
        )
