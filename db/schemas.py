"""Pydantic documents for the campaign collections ``candidates``, ``materials``, ``rounds``.

Structures are stored as pymatgen ``Structure.as_dict()`` mappings; energies in eV and
eV/atom. Large arrays (trajectory frames, model files) never live in these documents:
they go to GridFS buckets (see :mod:`flywheel.db.stores`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(timezone.utc)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class Prediction(BaseModel):
    """What the ML filter predicted for one candidate."""

    energy_per_atom: float = Field(description="Ensemble mean energy (eV/atom).")
    energy_std: float = Field(description="Ensemble standard deviation (eV/atom).")
    e_above_hull: float = Field(
        description="Predicted energy above the current hull (eV/atom)."
    )
    acquisition: float = Field(
        description="Acquisition value used for ranking (eV/atom, lower is better)."
    )
    model_round: int = Field(description="Round whose ensemble made the prediction.")


class CandidateDoc(_Doc):
    """One generated (or seed) structure and what happened to it."""

    campaign: str = Field(description="Campaign name.")
    candidate_id: str = Field(description="Unique id, e.g. 'r1-sub-000042'.")
    round: int = Field(description="Round in which the candidate was generated.")
    generator: str = Field(description="'seed', 'substitution', ...")
    source: str | None = Field(None, description="Seed source or prototype label.")
    parent_id: str | None = Field(None, description="Material id of the parent.")
    substitution: dict[str, str] | None = Field(
        None, description="Element substitution applied to the parent (old → new)."
    )
    formula: str = Field(description="Reduced formula.")
    chemsys: str = Field(description="Chemical system, elements sorted, '-'-joined.")
    nelements: int = Field(description="Number of distinct elements.")
    nsites: int = Field(description="Number of sites in the cell.")
    structure: dict[str, Any] = Field(description="pymatgen Structure as a dict.")
    status: Literal["generated", "selected", "relaxed", "failed"] = Field(
        "generated", description="Where the candidate is in the round."
    )
    selected_round: int | None = Field(
        None, description="Round whose filter sent it to the oracle (None: not yet)."
    )
    prediction: Prediction | None = Field(None, description="ML filter prediction.")
    failure: str | None = Field(None, description="Why the oracle failed, if it did.")
    created_at: datetime = Field(default_factory=_now)


class MaterialDoc(_Doc):
    """One oracle result: a relaxed structure with its energy and hull position."""

    campaign: str = Field(description="Campaign name.")
    material_id: str = Field(description="Unique id; equals the candidate id.")
    candidate_id: str = Field(description="Candidate this result came from.")
    round: int = Field(description="Round in which the oracle evaluated it.")
    generator: str = Field(description="Generator of the candidate.")
    oracle: str = Field(description="Oracle backend, e.g. 'chgnet'.")
    formula: str = Field(description="Reduced formula.")
    chemsys: str = Field(description="Chemical system, elements sorted, '-'-joined.")
    elements: list[str] = Field(description="Sorted element symbols.")
    nelements: int = Field(description="Number of distinct elements.")
    nsites: int = Field(description="Number of sites.")
    structure: dict[str, Any] = Field(description="Relaxed pymatgen Structure (dict).")
    energy: float = Field(description="Total energy of the relaxed cell (eV).")
    energy_per_atom: float = Field(description="Energy per atom (eV/atom).")
    converged: bool = Field(description="Whether the relaxation met its force criterion.")
    n_steps: int = Field(description="Ionic steps taken.")
    n_frames: int = Field(description="Trajectory frames stored for training.")
    e_above_hull: float | None = Field(None, description="Energy above hull (eV/atom).")
    decomposition_energy: float | None = Field(
        None,
        description="Energy above hull for unstable entries; phase-separation energy "
        "(≤ 0, against the hull without the entry) for stable ones (eV/atom).",
    )
    stable: bool | None = Field(None, description="On the hull within tolerance.")
    discovery: bool = Field(
        False,
        description="New by structure (novelty 'new'), generated (not a seed or "
        "reference) and on the hull by more than hull.on_hull_tolerance "
        "(decomposition_energy < −tolerance).",
    )
    novelty: Literal["new", "known", "duplicate", "unjudged"] | None = Field(
        None,
        description="Structure match against the references ('known') and earlier "
        "results ('duplicate'); None until the hull job judged it.",
    )
    known_id: str | None = Field(
        None, description="The matched reference id (e.g. 'mp-19419') or, for a "
        "duplicate, the earlier material id."
    )
    selected_by: Literal["filter", "audit"] | None = Field(
        None, description="Who sent it to the oracle (None: round 0)."
    )
    reference_id: str | None = Field(
        None, description="For a recomputed reference: its source id."
    )
    prediction: Prediction | None = Field(None, description="Filter's prediction.")
    created_at: datetime = Field(default_factory=_now)


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
    stopped: bool = Field(False, description="Whether the stop rule ended the campaign.")
    stop_reason: str | None = Field(None, description="Why the campaign stopped.")
    finished_at: datetime = Field(default_factory=_now)
