"""The campaign configuration: one typed object, loaded from YAML.

Every section forbids unknown keys, so a typo such as ``ensmble_size`` is an error that
names the field (with a suggestion) instead of a silently ignored setting.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from flywheel.settings import DEFAULT_URI

__all__ = [
    "CampaignConfig",
    "ConfigError",
    "load_campaign",
]


class ConfigError(ValueError):
    """A campaign file that cannot be used; the message names the offending field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ChemistryConfig(_Section):
    """The chemical space the campaign explores."""

    elements: list[str] = Field(
        description="Element symbols candidates may contain, e.g. [Li, Fe, O]."
    )
    max_elements: int = Field(
        3, ge=1, le=8, description="Maximum number of distinct elements per candidate."
    )
    max_sites: int = Field(
        24,
        ge=1,
        description="Maximum number of sites in a candidate cell (bounds candidates "
        "and seeds, never elemental or hull references).",
    )

    @field_validator("elements")
    @classmethod
    def _known_elements(cls, value: list[str]) -> list[str]:
        from pymatgen.core.periodic_table import Element

        if not value:
            raise ValueError("at least one element is required")
        unknown = [e for e in value if not Element.is_valid_symbol(e)]
        if unknown:
            raise ValueError(f"unknown element symbol(s): {', '.join(unknown)}")
        if len(set(value)) != len(value):
            raise ValueError("elements must not repeat")
        return value


class SeedsConfig(_Section):
    """Round 0: what the oracle relaxes before any model exists."""

    builtin: bool = Field(
        True,
        description="Include the built-in seeds: elemental references and binary "
        "AFLOW prototypes decorated with the campaign's elements.",
    )
    files: list[Path] = Field(
        default_factory=list,
        description="Extra seeds: files (CIF, POSCAR, extxyz, Structure or "
        "ComputedStructureEntry JSON) or folders of them, or a GNoME data folder "
        "(docs/seeds.md). Relative paths are relative to the campaign file.",
    )
    max_seeds: int = Field(
        24,
        ge=1,
        description="Seeds relaxed in round 0 at most: elemental references first "
        "(always all of them, whatever their size), then the seed files, then "
        "built-in prototypes. Recomputed hull references come on top.",
    )


class SubstitutionConfig(_Section):
    """Ion substitution with pymatgen's data-mined substitution probabilities."""

    enabled: bool = Field(True, description="Run this generator.")
    budget: int = Field(
        200, ge=0, description="Maximum unique candidates per round from this generator."
    )
    threshold: float = Field(
        1e-3,
        gt=0,
        le=1,
        description="Minimum substitution probability (pymatgen Substitutor threshold).",
    )


    max_known_per_formula: int = Field(
        3,
        ge=1,
        description="Tuned for discovery: skip substitution outcomes whose reduced "
        "formula already has this many structures in the database.",
    )


class SapsConfig(_Section):
    """SAPS: symmetry-aware partial substitution (docs/generators/saps.md)."""

    enabled: bool = Field(True, description="Run this generator.")
    budget: int = Field(
        100, ge=0, description="Maximum unique candidates per round from SAPS."
    )
    threshold: float = Field(
        5e-3, gt=0, le=1, description="Minimum pair substitution probability."
    )
    max_candidates_per_parent: int | None = Field(
        50, ge=1, description="Cap on partial substitutions per parent structure."
    )


class PrototypeConfig(_Section):
    """Decorations of pymatgen's AFLOW prototype library (docs/generators/prototypes.md)."""

    enabled: bool = Field(
        True, description="Run this generator (in round 1 only: its output does not "
        "depend on what the campaign has found)."
    )
    budget: int = Field(
        50, ge=0, description="Maximum unique candidates from prototypes."
    )


class RandomSearchConfig(_Section):
    """AIRSS-like random structure search with pyxtal (docs/generators/rss.md)."""

    enabled: bool = Field(False, description="Run this generator.")
    compositions_per_round: int = Field(
        2, ge=1, description="New compositions searched per round."
    )
    trials: int = Field(
        100, ge=1, description="Random symmetric crystals per composition."
    )
    max_atoms: int = Field(12, ge=1, description="Maximum atoms per random cell.")
    budget: int = Field(
        40, ge=0, description="Maximum unique candidates per round from this search."
    )
    rank_by_composition_model: bool = Field(
        True,
        description="Search the compositions a composition model, trained on the "
        "campaign's oracle results, predicts lowest relative to the current hull "
        "(else, or with too little data, a seeded random choice).",
    )
    min_training_materials: int = Field(
        20,
        ge=2,
        description="Oracle results with elemental references needed to train the "
        "composition model; fewer: seeded random compositions.",
    )


class GenerateConfig(_Section):
    """Candidate generators and their per-round budgets."""

    substitution: SubstitutionConfig = Field(default_factory=SubstitutionConfig)
    saps: SapsConfig = Field(default_factory=SapsConfig)
    prototypes: PrototypeConfig = Field(default_factory=PrototypeConfig)
    random_search: RandomSearchConfig = Field(default_factory=RandomSearchConfig)
    seed: int = Field(0, description="Random seed for sub-sampling over budget.")


class MaceModelConfig(_Section):
    """Size and training schedule of each MACE ensemble member."""

    num_channels: int = Field(16, ge=4, description="Hidden channels.")
    max_L: int = Field(0, ge=0, le=3, description="Maximum equivariant order L.")
    r_max: float = Field(5.0, gt=1, description="Cut-off radius (Å).")
    num_interactions: int = Field(2, ge=1, le=4, description="Message-passing layers.")
    max_num_epochs: int = Field(
        30, ge=1, description="Epochs of a training from scratch (or from "
        "filter.foundation_model)."
    )
    warm_start_epochs: int | None = Field(
        None,
        ge=1,
        description="Epochs of the rounds that start from the previous round's "
        "members (None: half of max_num_epochs, at least 5): a warm start begins "
        "near its minimum.",
    )
    batch_size: int = Field(8, ge=1, description="Training batch size (structures).")
    lr: float = Field(0.01, gt=0, description="Learning rate.")


class FilterConfig(_Section):
    """The ML filter: MACE ensemble, acquisition and selection budget."""

    ensemble_size: int = Field(
        4, ge=2, le=16,
        description="MACE models in the ensemble (each a different seed; the "
        "quickstart uses 2 to stay small).",
    )
    budget: int = Field(
        8, ge=1, description="Candidates sent to the oracle per round."
    )
    stability_threshold: float = Field(
        0.05,
        ge=0,
        description="Predicted energy above hull (eV/atom) at or below which the filter "
        "calls a candidate stable.",
    )
    kappa: float = Field(
        1.0,
        ge=0,
        description="Acquisition = predicted E_hull − kappa × ensemble spread (eV/atom): "
        "larger values explore more.",
    )
    max_per_formula: int = Field(
        2, ge=1, description="Polymorphs of one reduced formula selected per round."
    )
    batch_size: int | None = Field(
        None, ge=1, description="Most structures per inference batch; null: 32 on a "
        "CPU, 1024 on a GPU (where a batch that runs out of memory is split and "
        "retried, and later batches stay under the size that fit).")
    cueq: bool = Field(
        False, description="Run the ensemble on cuEquivariance kernels (needs "
        "cuequivariance-torch and, for speed, its CUDA ops). Same energies; on a CPU "
        "10-13 s per model to convert and 2.4-2.8x slower, so only for a GPU; "
        "unmeasured on one (benchmarks/filter_throughput.py --cueq).")
    tta_scales: list[float] = Field(
        default_factory=lambda: [1.0],
        description="Isotropic lattice scalings for test-time augmentation; each "
        "member takes its minimum over them (GNoME's volume TTA). [1.0] turns it off "
        "(measured on mp20: min over 0.96-1.04 raised the MAE from 0.189 to 0.219 "
        "eV/atom for already-relaxed inputs).",
    )
    audit_fraction: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="Share of the oracle budget given to candidates drawn uniformly "
        "at random from the scored pool (selected_by: audit), so that every round "
        "measures the pool's base rate and the filter's enrichment without bias; at "
        "least one candidate per round once the budget is 4 or more (0 turns it off).",
    )
    selection: Literal["acquisition", "random", "random_per_generator"] = Field(
        "acquisition",
        description="How the non-audit part of the budget is chosen: 'acquisition' "
        "(the filter's ranking), or the baselines of benchmarks/"
        "discovery_efficiency.py: 'random' (uniform over the pool) and "
        "'random_per_generator' (random order within the filter's per-generator "
        "quotas and polymorph cap).",
    )
    foundation_model: Path | None = Field(
        None,
        description="A local MACE model file (e.g. a MACE-MP checkpoint downloaded "
        "once) every ensemble member is fine-tuned from in round 0; its architecture, "
        "cut-off and E0s replace filter.model's. flywheel never downloads a model. "
        "Relative paths are relative to the campaign file.",
    )
    shard_size: int | None = Field(
        None, ge=1,
        description="Candidates per screening job: the pool is predicted by "
        "ceil(pool / shard_size) gpu jobs that store their predictions, and the filter "
        "job selects from them. None: the filter job predicts the whole pool itself.",
    )
    split_by_generator: bool = Field(
        True,
        description="Split the budget across generators in proportion to each one's "
        "Beta-smoothed hit rate in earlier rounds (each keeps at least 5 %).",
    )
    prerelax: Literal["none", "chgnet", "mace"] = Field(
        "none",
        description="Relax candidates with an MLIP before scoring (docs/filter.md): "
        "'chgnet' (pretrained weights of the chgnet wheel) or 'mace' (the first "
        "member of the current ensemble). The relaxed structure is scored and is "
        "what the oracle gets; each candidate is pre-relaxed once.",
    )
    prerelax_steps: int = Field(
        50, ge=1, description="Most FIRE steps (positions and cell) per pre-relaxation."
    )
    prerelax_fmax: float = Field(
        0.1, gt=0, description="Force criterion that ends a pre-relaxation (eV/Å)."
    )
    model: MaceModelConfig = Field(default_factory=MaceModelConfig)


_ATOMATE2_HANDLERS = [
    "VaspErrorHandler", "MeshSymmetryErrorHandler", "UnconvergedErrorHandler",
    "NonConvergingErrorHandler", "PotimErrorHandler", "PositiveEnergyErrorHandler",
    "FrozenJobErrorHandler", "StdErrHandler", "LargeSigmaHandler",
    "IncorrectSmearingHandler", "KspacingMetalHandler",
]


class VaspConfig(_Section):
    """VASP through atomate2's MP makers and custodian (``oracle.backend: vasp``)."""

    vasp_cmd: str = Field(
        "vasp_std",
        description="Command custodian runs for VASP, e.g. 'srun vasp_std' on SLURM "
        "(environment variables are expanded).",
    )
    gamma_vasp_cmd: str | None = Field(
        None, description="Command for Gamma-only k-point runs (vasp_gam), if any."
    )
    potcar_dir: Path | None = Field(
        None,
        description="POTCAR library root (pymatgen's PMG_VASP_PSP_DIR layout, e.g. "
        "POT_GGA_PAW_PBE_54/). None: use pymatgen's own setting (~/.config/.pmgrc.yaml "
        "or the PMG_VASP_PSP_DIR environment variable).",
    )
    potcar_spec: bool = Field(
        False,
        description="Write POTCAR.spec (symbols only) instead of POTCAR, as atomate2's "
        "own tests do; only for stand-in executables, never for real VASP.",
    )
    handlers: list[str] = Field(
        default_factory=lambda: list(_ATOMATE2_HANDLERS),
        description="Custodian error handlers (class names in custodian.vasp.handlers); "
        "the default is atomate2's DEFAULT_HANDLERS.",
    )
    max_errors: int = Field(
        5, ge=0, description="Errors custodian may correct before the job fails."
    )
    run_dir: Path = Field(
        Path("vasp_runs"),
        description="Where each candidate's calculation directories go (relative to "
        "the worker's launch directory).",
    )


class Cp2kConfig(_Section):
    """CP2K through ASE's CP2K calculator (``oracle.backend: cp2k``; docs/cp2k.md)."""

    command: str = Field(
        "cp2k_shell",
        description="CP2K shell command (Debian: cp2k_shell; on a cluster e.g. "
        "'srun cp2k_shell.psmp').",
    )
    data_dir: Path = Field(
        Path("/usr/share/cp2k"),
        description="Folder holding the basis-set and pseudopotential files.",
    )
    basis_set: str = Field("DZVP-MOLOPT-SR-GTH", description="Basis set per element.")
    basis_file: str = Field("BASIS_MOLOPT", description="Basis-set file in data_dir.")
    potential_file: str = Field(
        "GTH_POTENTIALS", description="Pseudopotential file in data_dir."
    )
    pseudo_potential: str = Field(
        "GTH-PBE", description="Pseudopotential family (matched as GTH-PBE-qN)."
    )
    xc: str = Field("PBE", description="Exchange-correlation functional.")
    cutoff: float = Field(400.0, gt=0, description="Plane-wave cutoff (Ry).")
    rel_cutoff: float = Field(50.0, gt=0, description="Relative cutoff (Ry).")
    kpoint_spacing: float = Field(
        0.25, ge=0,
        description="k-point spacing (1/Å); Γ-centred meshes rounded up to odd; 0: Γ only.",
    )
    uks: bool = Field(
        False, description="Spin-polarised (UKS) calculation; doubles the SCF cost."
    )
    magnetization: float = Field(
        0.6, description="Initial magnetic moment per atom when uks is on."
    )
    smearing_kelvin: float | None = Field(
        500.0, description="Fermi-Dirac smearing temperature (K); None: no smearing."
    )
    eps_scf: float = Field(1e-6, gt=0, description="SCF convergence.")
    max_scf: int = Field(100, ge=1, description="Maximum SCF iterations.")
    mixing_alpha: float = Field(0.2, gt=0, le=1, description="Broyden mixing weight.")
    eps_default: float = Field(1e-10, gt=0, description="CP2K EPS_DEFAULT.")
    omp_threads: int | None = Field(
        None, ge=1, description="OMP_NUM_THREADS for CP2K (None: inherited)."
    )
    scratch_dir: Path | None = Field(
        None, description="Where per-structure run folders go (None: system temp)."
    )
    keep_files: bool = Field(False, description="Keep run folders after success.")


class OracleConfig(_Section):
    """The oracle that relaxes selected candidates."""

    backend: Literal["chgnet", "vasp", "cp2k"] = Field(
        "chgnet",
        description="'chgnet': atomate2's ForceFieldRelaxMaker with the CHGNet weights "
        "shipped in the chgnet wheel (runs anywhere, no download). 'vasp': atomate2's "
        "MPGGADoubleRelaxStaticMaker (MP GGA/GGA+U double relax + static) under "
        "custodian, MP2020 corrections applied once (see oracle.vasp). 'cp2k': "
        "CP2K (PBE, GTH pseudopotentials, MOLOPT basis) through ASE with BFGS on "
        "positions and cell (see oracle.cp2k).",
    )
    fmax: float = Field(0.05, gt=0, description="Force convergence (eV/Å).")
    steps: int = Field(300, ge=1, description="Maximum ionic steps per relaxation.")
    relax_cell: bool = Field(True, description="Relax the cell as well as positions.")
    chunk_size: int = Field(
        4, ge=1, description="Relaxations per FireWorks job (cheap oracles batch well)."
    )
    max_frames: int = Field(
        12,
        ge=2,
        description="Trajectory frames kept per relaxation for training "
        "(evenly spaced; first and last always kept).",
    )
    vasp: VaspConfig = Field(default_factory=VaspConfig)
    cp2k: Cp2kConfig = Field(default_factory=Cp2kConfig)


class HullConfig(_Section):
    """Convex hull and the definition of 'stable'."""

    on_hull_tolerance: float = Field(
        5e-5,
        ge=0,
        description="Energy above hull (eV/atom) at or below which an entry counts as "
        "on the hull (GNoME uses 5e-5).",
    )
    references: list[Path] = Field(
        default_factory=list,
        description="Known materials (docs/discovery.md): MP ComputedStructureEntry "
        "JSON files or folders of them, a GNoME data folder (summary CSV + CIFs), or "
        "CIF/POSCAR folders with an optional energies.csv (docs/seeds.md). Loaded "
        "once, in round 0, into the 'references' collection with their structures: "
        "every oracle result is matched against them (a match is 'known', never a "
        "discovery), the generators skip structures that match one, and their "
        "energies reach the hull only on the oracle's scale (recompute_references).",
    )
    recompute_references: bool | None = Field(
        None,
        description="Relax, with the oracle, in round 0, the reference structures "
        "within recompute_window of their source hull, and build every hull from "
        "those results instead of the references' own energies (GNoME recomputed "
        "MP this way). None: on for the chgnet and cp2k oracles, off for vasp (MP "
        "and GNoME energies are MP2020-corrected GGA/GGA+U, the vasp oracle's scale). "
        "Off with a chgnet or cp2k oracle is refused: the hull would mix levels of "
        "theory.",
    )
    recompute_window: float = Field(
        0.1,
        ge=0,
        description="Energy above the references' own hull (eV/atom) up to which a "
        "reference is recomputed; references without an energy are always "
        "recomputed.",
    )
    compatibility: Literal["MP2020", "none"] = Field(
        "MP2020",
        description="Corrections applied to reference entries as they are loaded "
        "(MP2020: pymatgen's MaterialsProject2020Compatibility, any existing "
        "adjustments replaced; 'none': energies as stored). GNoME energies are "
        "already corrected and are never corrected again.",
    )
    mp_api: bool = Field(
        False,
        description="Also load the Materials Project entries of the campaign's "
        "chemical system through the MP API (needs the mp-api package and the "
        "MP_API_KEY environment variable; never read from this file).",
    )


class RecheckConfig(_Section):
    """The r²SCAN re-check of discoveries (``flywheel recheck``; docs/recheck.md)."""

    max_materials: int = Field(
        50, ge=1,
        description="Discoveries re-checked at most (most negative decomposition "
        "energy first); their competing phases are recomputed too.",
    )
    chunk_size: int = Field(
        1, ge=1, description="High-fidelity relaxations per FireWorks job."
    )


class ConductivityConfig(_Section):
    """MD ionic-conductivity screening (``flywheel conductivity``;
    docs/conductivity.md gives the reasons for each default)."""

    potential: str = Field(
        "chgnet",
        description="'chgnet' (weights in the chgnet wheel) or the path of a MACE "
        "model file, e.g. the campaign's own from `flywheel potential export`.",
    )
    specie: str = Field("Li", description="The mobile ion.")
    temperatures: list[float] = Field(
        default_factory=lambda: [600.0, 800.0, 1000.0, 1200.0],
        min_length=2,
        description="NVT temperatures (K); at least two for the Arrhenius fit.",
    )
    time_step: float = Field(2.0, gt=0, le=5, description="MD time step (fs).")
    equilibration_ps: float = Field(
        5.0, ge=0, description="Thermalisation discarded before recording (ps).")
    production_ps: float = Field(
        50.0, gt=0, description="Recorded MD per temperature (ps).")
    sample_every: int = Field(5, ge=1, description="MD steps between recorded frames.")
    min_length: float = Field(
        10.0, gt=0, description="Minimum perpendicular width of the supercell (Å).")
    max_atoms: int = Field(400, ge=1, description="Largest MD cell allowed (atoms).")
    max_materials: int = Field(
        20, ge=1, description="Materials screened at most per `flywheel conductivity`.")

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(t <= 0 for t in v):
            raise ValueError("temperatures must be positive (K)")
        return sorted(set(v))


class PotentialConfig(_Section):
    """The campaign's potential as a product (``flywheel potential export``;
    docs/potential.md)."""

    num_channels: int = Field(64, ge=4, description="Hidden channels of the final model.")
    max_L: int = Field(1, ge=0, le=2, description="Highest symmetry order of features.")
    r_max: float = Field(5.0, gt=1, description="Cut-off radius (Å).")
    num_interactions: int = Field(2, ge=1, le=4, description="Message-passing layers.")
    max_num_epochs: int = Field(100, ge=1, description="Training epochs.")
    batch_size: int = Field(8, ge=1, description="Training batch size (structures).")
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    test_fraction: float = Field(
        0.1, gt=0, lt=0.5,
        description="Fraction of the campaign's materials (all frames of each) held "
        "out of training; the model card's errors are measured on them.",
    )
    seed: int = Field(0, description="Seed of the held-out split and the training.")


class RoundsConfig(_Section):
    """When the campaign stops."""

    max_rounds: int = Field(
        2, ge=0, description="Active-learning rounds after the seed round 0."
    )
    max_oracle_calls: int | None = Field(
        None, ge=1, description="Stop once this many oracle relaxations were run."
    )
    min_hit_rate: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Stop when the hit rate (stable ÷ evaluated) of a round falls "
        "below this value for `patience` consecutive rounds.",
    )
    patience: int = Field(1, ge=1, description="Rounds below min_hit_rate before stop.")


class DatabaseConfig(_Section):
    """Where the campaign, the LaunchPad and the JobStore live (one MongoDB database)."""

    uri: str = Field(
        DEFAULT_URI,
        description="MongoDB URI including the database name. A loopback URI is served "
        "by the local SecantusDB server that `flywheel run` starts.",
    )

    @field_validator("uri")
    @classmethod
    def _mongodb_uri(cls, value: str) -> str:
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value


class CampaignConfig(_Section):
    """Everything that defines one active-learning campaign."""

    name: str = Field(
        description="Campaign name; every stored document carries it.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    chemistry: ChemistryConfig
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    hull: HullConfig = Field(default_factory=HullConfig)
    recheck: RecheckConfig = Field(default_factory=RecheckConfig)
    conductivity: ConductivityConfig = Field(default_factory=ConductivityConfig)
    potential: PotentialConfig = Field(default_factory=PotentialConfig)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)

    @model_validator(mode="after")
    def _one_energy_scale(self) -> CampaignConfig:
        has_refs = bool(self.hull.references) or self.hull.mp_api
        if has_refs and self.hull.recompute_references is False and (
            self.oracle.backend != "vasp"
        ):
            raise ValueError(
                f"hull.recompute_references is false, but the {self.oracle.backend} "
                "oracle does not compute energies on the scale of the reference "
                "entries (MP2020-corrected GGA/GGA+U): the hull would mix levels of "
                "theory. Set hull.recompute_references: true (the default for this "
                "oracle) so that round 0 recomputes the near-hull references, or "
                "remove hull.references."
            )
        return self

    def recomputes_references(self) -> bool:
        """Whether round 0 recomputes the references with the oracle (resolved)."""
        flag = self.hull.recompute_references
        return self.oracle.backend != "vasp" if flag is None else flag

    def audit_count(self) -> int:
        """Oracle calls per round that go to uniformly random audit picks."""
        n = int(math.floor(self.filter.audit_fraction * self.filter.budget + 0.5))
        if self.filter.audit_fraction > 0 and self.filter.budget >= 4:
            n = max(n, 1)
        return min(n, self.filter.budget)

    def resolved_seed_files(self, base: Path) -> list[Path]:
        """Seed files with relative paths taken relative to ``base``."""
        return [p if p.is_absolute() else (base / p) for p in self.seeds.files]

    def resolved_reference_files(self, base: Path) -> list[Path]:
        """Reference paths with relative paths taken relative to ``base``."""
        return [p if p.is_absolute() else (base / p) for p in self.hull.references]


def _suggest(loc: tuple[Any, ...]) -> str:
    """Suggest the closest valid field name for a mistyped key."""
    model: Any = CampaignConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        model = field.annotation
    names = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_validation_error(err: ValidationError, source: str) -> str:
    """One message per problem, each naming the dotted field path."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = ".".join(str(p) for p in loc) or "<top level>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown field '{dotted}'{_suggest(loc)}")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing required field '{dotted}'")
        elif not loc:  # a rule across fields: its message names them
            lines.append(f"{source}: {e['msg'].removeprefix('Value error, ')}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: field '{dotted}': {msg}")
    return "\n".join(lines)


def campaign_from_dict(data: dict[str, Any], source: str = "campaign") -> CampaignConfig:
    """Validate a mapping into a :class:`CampaignConfig` or raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_campaign(path: str | Path) -> CampaignConfig:
    """Load and validate a campaign YAML file.

    Seed file paths are made absolute relative to the YAML file and checked to exist,
    so that a missing file fails before anything is submitted.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"campaign file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    config = campaign_from_dict(data, source=str(path))
    base = path.resolve().parent
    for dotted, files in (("seeds.files", config.resolved_seed_files(base)),
                          ("hull.references", config.resolved_reference_files(base))):
        missing = [str(p) for p in files if not p.exists()]
        if missing:
            raise ConfigError(f"{path}: field '{dotted}': not found: {missing[0]}")
    config.seeds.files = config.resolved_seed_files(base)
    config.hull.references = config.resolved_reference_files(base)
    foundation = config.filter.foundation_model
    if foundation is not None:
        foundation = foundation if foundation.is_absolute() else base / foundation
        if not foundation.is_file():
            raise ConfigError(
                f"{path}: field 'filter.foundation_model': not found: {foundation}"
            )
        config.filter.foundation_model = foundation
    potential = config.conductivity.potential
    if potential.lower() != "chgnet" and not Path(potential).is_absolute():
        # a MACE file named relative to the campaign file (workers run elsewhere)
        config.conductivity.potential = str(base / potential)
    return config


def _type_name(ann: Any) -> str:
    import re
    import typing

    if typing.get_args(ann):
        text = str(ann)
    else:
        text = getattr(ann, "__name__", str(ann))
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    return re.sub(r"\b(?:typing|pathlib)\.", "", text).replace("|", "\\|")


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md embeds this text; a test
    keeps the two identical).
    """
    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        rows = []
        subs = []
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                subs.append((name, ann))
                continue
            default = "required" if f.is_required() else (
                f"`{f.get_default(call_default_factory=True)!r}`"
            )
            type_name = _type_name(ann)
            desc = (f.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {type_name} | {default} | {desc} |")
        if rows:
            title = prefix.rstrip(".") or "top level"
            doc = (model.__doc__ or "").strip().splitlines()[0]
            lines.extend([f"### `{title}`", "", doc, "",
                          "| field | type | default | meaning |",
                          "|---|---|---|---|", *rows, ""])
        for name, sub in subs:
            walk(sub, f"{prefix}{name}.")

    walk(CampaignConfig, "")
    return "\n".join(lines)
