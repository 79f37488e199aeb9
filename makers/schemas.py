"""Outputs of the stage jobs: small documents that name what was written to the
campaign collections (never the structures themselves).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class GenerateOutput(BaseModel):
    """What a generation (or seed) job produced."""

    round: int = Field(description="Round index.")
    generated: int = Field(description="Candidates produced before checks and dedup.")
    rejected: int = Field(description="Candidates rejected as unphysical/unreadable.")
    rejection_reasons: dict[str, int] = Field(
        default_factory=dict, description="Count per rejection reason."
    )
    duplicates: int = Field(0, description="Duplicates of the batch or the database.")
    unique: int = Field(description="Candidates stored for this round.")
    per_generator: dict[str, int] = Field(
        default_factory=dict, description="Unique candidates per generator."
    )
    selected_ids: list[str] | None = Field(
        None, description="Ids sent straight to the oracle (seed round only)."
    )


class FilterOutput(BaseModel):
    """What the ML filter scored and selected."""

    round: int = Field(description="Round index.")
    scored: int = Field(description="Candidates scored by the ensemble.")
    unscorable: int = Field(0, description="Candidates that could not be scored.")
    unscorable_reasons: dict[str, int] = Field(
        default_factory=dict, description="Count per reason a candidate was unscorable."
    )
    selected_ids: list[str] = Field(description="Candidates sent to the oracle.")
    audit_ids: list[str] = Field(
        default_factory=list,
        description="The part of selected_ids drawn uniformly at random from the "
        "scored pool (filter.audit_fraction).",
    )
    model_round: int = Field(description="Round whose ensemble was used.")
    seconds: float = Field(description="Wall time of inference (s).")
    prerelaxed: int = Field(
        0, description="Candidates pre-relaxed this round (filter.prerelax)."
    )
    prerelax_failed: int = Field(
        0, description="Pre-relaxations that failed (original structure kept)."
    )


class RelaxOutput(BaseModel):
    """What one oracle chunk did."""

    round: int = Field(description="Round index.")
    evaluated: list[str] = Field(description="Candidate ids relaxed by this chunk.")
    skipped: list[str] = Field(
        default_factory=list, description="Ids that already had a result (rerun)."
    )
    failed: dict[str, str] = Field(
        default_factory=dict, description="Candidate id → failure reason."
    )
    seconds: float = Field(description="Wall time of the chunk (s).")


class HullOutput(BaseModel):
    """What the hull update changed."""

    round: int = Field(description="Round index.")
    systems: list[str] = Field(description="Chemical systems whose hull was rebuilt.")
    updated: int = Field(description="Materials whose hull fields were rewritten.")
    n_stable: int = Field(description="Stable materials in the campaign.")
    new_discoveries: list[str] = Field(
        description="Material ids that became discoveries (new and on the hull)."
    )
    novelty: dict[str, int] = Field(
        default_factory=dict,
        description="Novelty verdicts stored this round: new, known, duplicate.",
    )
    unscored: int = Field(
        0, description="This round's results without a hull (a missing elemental "
        "reference); they keep stable=None."
    )
    unscored_reasons: dict[str, int] = Field(
        default_factory=dict, description="Count per reason a result has no hull."
    )


class TrainOutput(BaseModel):
    """The ensemble trained at the end of a round."""

    round: int = Field(description="Round index.")
    model_file_ids: list[str] = Field(description="GridFS ids of the model files.")
    n_frames: int = Field(description="Training frames used.")
    seconds: float = Field(description="Training wall time (s).")
    warm_started: bool = Field(
        description="Whether members started from a model (last round's, or "
        "filter.foundation_model in round 0)."
    )
    start: str = Field(
        "scratch",
        description="What the members started from: 'scratch', 'previous round' or "
        "'foundation'.",
    )
    seconds_per_epoch: float | None = Field(
        None, description="Mean wall seconds per training epoch of a member "
        "(validation included), from MACE's log.")
    workers: int = Field(1, description="Worker processes that trained the members "
                         "side by side; each trains its members in turn.")
    startup_seconds: float | None = Field(
        None, description="Longest worker start-up (imports, device start), paid "
        "once per worker rather than once per member.")
