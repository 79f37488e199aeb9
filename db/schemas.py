"""The pydantic document of the ``rounds`` collection (one per campaign and round).

The ``candidates`` and ``materials`` documents are written by their stages
(:mod:`flywheel.makers.generate.admit`, :mod:`flywheel.makers.relax.jobs`) and described
in docs/design.md. Large arrays (trajectory frames, model files) never live in
documents: they go to GridFS buckets (see :mod:`flywheel.db.stores`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(timezone.utc)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class RoundDoc(_Doc):
    """Metrics of one active-learning round."""

    campaign: str = Field(description="Campaign name.")
    round: int = Field(description="Round index (0 = seeds).")
    generated: int = Field(description="Candidates produced by the generators.")
    rejected: int = Field(description="Candidates rejected as unphysical or unreadable.")
    rejection_reasons: dict[str, int] = Field(
        default_factory=dict, description="Count per rejection reason."
    )
    unique: int = Field(description="Candidates left after deduplication.")
    pool: int | None = Field(
        None,
        description="Candidates the filter scored and chose from (this round's and "
        "earlier rounds' unselected ones); None in round 0.",
    )
    selected: int = Field(description="Candidates sent to the oracle.")
    evaluated: int = Field(description="Oracle relaxations that finished.")
    failed: int = Field(description="Oracle relaxations that failed.")
    stable_found: int = Field(
        description="Evaluated candidates on the hull of references + campaign "
        "(e_above_hull ≤ hull.on_hull_tolerance) when the round closed."
    )
    hit_rate: float | None = Field(None, description="stable_found ÷ evaluated.")
    n_new: int = Field(0, description="Discoveries among this round's results.")
    n_known: int = Field(
        0, description="This round's stable results that match a reference."
    )
    filter_mae: float | None = Field(
        None, description="MAE of predicted vs oracle energy (eV/atom), every scored "
        "result of the round."
    )
    selection: str = Field(
        "acquisition", description="filter.selection of the round ('seeds' in round 0)."
    )
    audit: dict[str, Any] | None = Field(
        None,
        description="The audit picks (uniform over the scored pool): n, hits, "
        "hit_rate, mae (eV/atom), coverage_68, coverage_95 (fraction of oracle "
        "energies within ±1σ/±1.96σ of the ensemble mean).",
    )
    picks: dict[str, Any] | None = Field(
        None, description="The same for the filter's own picks."
    )
    base_rate: float | None = Field(
        None, description="Hit rate of the audit picks: the pool's base rate."
    )
    enrichment: dict[str, float | None] | None = Field(
        None,
        description="Hit rate of the filter's picks ÷ base rate: value, lo, hi "
        "(Katz log interval), confidence (0.9).",
    )
    enrichment_cumulative: dict[str, float | None] | None = Field(
        None, description="The same, pooled over rounds 1 to this one."
    )
    unscorable: int = Field(
        0, description="Pool candidates the filter could not score this round."
    )
    unscorable_reasons: dict[str, int] = Field(
        default_factory=dict, description="Count per reason (unscorable)."
    )
    unscored: int = Field(
        0, description="This round's oracle results without a hull position."
    )
    unscored_reasons: dict[str, int] = Field(
        default_factory=dict, description="Count per reason (unscored)."
    )
    n_discoveries: int = Field(
        0, description="Discoveries in the campaign after the round (new by "
        "structure, on the hull by more than hull.on_hull_tolerance)."
    )
    precision: float | None = Field(None, description="Precision of 'stable' calls.")
    recall: float | None = Field(None, description="Recall of 'stable' calls.")
    calibration: dict[str, float | None] | None = Field(
        None,
        description="Filter calibration on every scored result of the round: "
        "coverage of the 68 %/95 % intervals of the ensemble, MAE/RMSE/bias "
        "(eV/atom), mean |z|, std_scale (docs/filter.md).",
    )
    n_materials: int = Field(description="Oracle results in the campaign so far.")
    n_stable: int = Field(description="Stable entries in the campaign after the round.")
    n_frames: int | None = Field(None, description="Training frames after the round.")
    train_seconds: float | None = Field(None, description="Ensemble training time (s).")
    train_seconds_per_epoch: float | None = Field(
        None, description="Mean seconds per training epoch of one member.")
    stopped: bool = Field(False, description="Whether the stop rule ended the campaign.")
    stop_reason: str | None = Field(None, description="Why the campaign stopped.")
    finished_at: datetime = Field(default_factory=_now)
