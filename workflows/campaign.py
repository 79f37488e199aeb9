"""The campaign: round 0, then rounds added one at a time until the stop rule holds.

The loop is a single job, :func:`close_round`, at the end of every round. It records the
round's metrics in ``rounds`` and either stops or returns ``Response(addition=...)`` with
the next round, so the workflow grows on the LaunchPad while it runs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Maker, Response, job

from flywheel.db.tags import CPU, tag_job
from flywheel.makers.common import campaign_db
from flywheel.workflows.round import RoundMaker

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)


def stop_reason(config: CampaignConfig, history: list[dict[str, Any]]) -> str | None:
    """Why the campaign stops after the last round of ``history``, or None.

    ``history`` holds the round documents in order (round 0 first).
    """
    rc = config.rounds
    last = history[-1]["round"]
    if last >= rc.max_rounds:
        return f"reached rounds.max_rounds={rc.max_rounds}"
    calls = sum(h["evaluated"] + h["failed"] for h in history)
    if rc.max_oracle_calls is not None and calls >= rc.max_oracle_calls:
        return f"{calls} oracle calls reached rounds.max_oracle_calls={rc.max_oracle_calls}"
    if rc.min_hit_rate is not None:
        recent = [h for h in history if h["round"] > 0][-rc.patience :]
        if len(recent) == rc.patience and all(
            (h["hit_rate"] or 0.0) < rc.min_hit_rate for h in recent
        ):
            return (
                f"hit rate below rounds.min_hit_rate={rc.min_hit_rate} for "
                f"{rc.patience} round(s)"
            )
    return None


def round_flow(
    round_maker: RoundMaker, config: CampaignConfig, round_index: int
) -> Flow:
    """Round ``round_index`` followed by its closing job."""
    body = round_maker.make(config, round_index)
    close = close_round(config, round_index, round_maker, body.output)
    tag_job(close, CPU, config.name, round_index, "close",
            name=f"{config.name} r{round_index} close")
    return Flow([body, close], output=close.output, name=f"{config.name} r{round_index}")


def calibration(materials: list[dict]) -> dict | None:
    """How well the ensemble's spread matched its errors on the round's results
    (energy per atom: predicted mean ± spread vs oracle; see ``calibration_report``).
    """
    import numpy as np

    from flywheel.makers.filter.calibration import calibration_report

    scored = [m for m in materials if m.get("prediction")]
    if not scored:
        return None
    report = calibration_report(
        np.array([m["prediction"]["energy_per_atom"] for m in scored]),
        np.array([m["prediction"]["energy_std"] for m in scored]),
        np.array([m["energy_per_atom"] for m in scored]),
    )
    keep = ("n", "mae", "rmse", "bias", "mean_std", "mean_abs_z", "std_scale",
            "coverage_68", "coverage_95")
    return {k: (None if isinstance(report[k], float) and math.isnan(report[k])
                else float(report[k])) for k in keep}


@job
def close_round(
    config: CampaignConfig,
    round_index: int,
    round_maker: RoundMaker,
    summary: dict[str, Any],
) -> Response:
    """Record the round's metrics and add the next round unless the campaign stops.

    ``summary`` is the round flow's output (generation, hull and training outputs).
    """
    from flywheel.db.schemas import RoundDoc
    from flywheel.makers.hull.metrics import cumulative_enrichment, round_metrics

    db = campaign_db(config)

    def as_dict(x: Any) -> dict:
        return (x or {}) if isinstance(x, dict) or x is None else x.model_dump()

    gen, trn = as_dict(summary["generated"]), as_dict(summary["trained"])
    sel, hull = as_dict(summary.get("selected")), as_dict(summary.get("hull"))
    mats = list(db.materials.find(
        db.q(round=round_index),
        {"stable": 1, "energy_per_atom": 1, "prediction": 1, "e_above_hull": 1,
         "selected_by": 1, "novelty": 1, "discovery": 1},
    ))
    metrics = round_metrics(mats, config.filter.stability_threshold)
    metrics["calibration"] = calibration(mats)
    # Selected but never relaxed: its oracle job fizzled (the hull ran without it).
    db.candidates.update_many(
        db.q(selected_round=round_index, status="selected"),
        {"$set": {"status": "failed", "failure": "oracle job did not complete"}},
    )
    selected = db.candidates.count_documents(db.q(selected_round=round_index))
    failed = db.candidates.count_documents(
        db.q(selected_round=round_index, status="failed")
    )
    doc = RoundDoc(
        campaign=config.name,
        round=round_index,
        generated=gen["generated"],
        rejected=gen["rejected"],
        rejection_reasons=gen.get("rejection_reasons", {}),
        unique=gen["unique"],
        pool=sel.get("scored") if round_index else None,
        selected=selected,
        failed=failed,
        unscorable=sel.get("unscorable", 0) if round_index else 0,
        unscorable_reasons=sel.get("unscorable_reasons", {}) if round_index else {},
        unscored=hull.get("unscored", 0),
        unscored_reasons=hull.get("unscored_reasons", {}),
        selection=config.filter.selection if round_index else "seeds",
        n_materials=db.materials.count_documents(db.q()),
        n_stable=db.materials.count_documents(db.q(stable=True)),
        n_discoveries=db.materials.count_documents(db.q(discovery=True)),
        n_frames=trn.get("n_frames"),
        train_seconds=trn.get("seconds"),
        train_seconds_per_epoch=trn.get("seconds_per_epoch"),
        **metrics,
    )
    history = [
        d for d in db.rounds.find(db.q(round={"$lt": round_index})).sort("round", 1)
    ]
    doc.enrichment_cumulative = cumulative_enrichment([*history, doc.model_dump()])
    reason = stop_reason(config, [*history, doc.model_dump()])
    doc.stopped = reason is not None
    doc.stop_reason = reason
    db.rounds.replace_one(db.q(round=round_index), doc.model_dump(), upsert=True)
    logger.info("round %d closed: %s", round_index, metrics)
    if reason is not None:
        return Response(output=doc.model_dump(mode="json"))
    return Response(
        output=doc.model_dump(mode="json"),
        addition=round_flow(round_maker, config, round_index + 1),
    )


@dataclass
class CampaignMaker(Maker):
    """The whole campaign as a jobflow Flow (round 0; later rounds are added live).

    Parameters
    ----------
    name
        Flow name.
    round_maker
        Builds each round from the stage Makers.
    """

    name: str = "flywheel campaign"
    round_maker: RoundMaker = field(default_factory=RoundMaker)

    def make(self, config: CampaignConfig) -> Flow:
        """The campaign flow for ``config``."""
        flow = round_flow(self.round_maker, config, 0)
        flow.name = f"{config.name}"
        return flow
