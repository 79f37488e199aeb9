"""Ionic conductivity from NVT molecular dynamics with a machine-learned potential.

Pure functions (no database, no workflow): build a supercell, run NVT MD at one
temperature with an ASE calculator and record the unwrapped displacements, analyse
them with pymatgen-analysis-diffusion's :class:`DiffusionAnalyzer`, and fit the
Arrhenius law over temperatures with its ``fit_arrhenius`` /
``get_extrapolated_conductivity``.

Units: temperatures K, times fs (``time_step``) or ps (durations), lengths Å,
diffusivities cm²/s, conductivities mS/cm (pymatgen's units), energies eV.

Error bars follow He, Zhu, Epstein and Mo, npj Comput. Mater. 4, 18 (2018): the
relative standard deviation of an MD diffusivity is ``3.43 / sqrt(N_eff) + 0.04``,
where ``N_eff`` is the total mean-square displacement of the mobile ions divided by the
square of the hop distance (the number of effective hops observed). A temperature
with fewer than ``min_hops`` effective hops is reported as "no measurable diffusion"
with an upper bound, never fitted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator
    from pymatgen.core import Structure

logger = logging.getLogger(__name__)

#: Boltzmann constant, eV/K.
KB = 8.617333262e-5


@dataclass(frozen=True)
class MDSettings:
    """How each NVT run is done and analysed (defaults: docs/conductivity.md).

    Attributes
    ----------
    temperatures : tuple of float
        NVT temperatures, K. At least two for an Arrhenius fit.
    time_step : float
        Integration step, fs (2 fs resolves Li vibrations, as in AIMD studies).
    equilibration_ps : float
        Thermalisation before recording, ps.
    production_ps : float
        Recorded MD per temperature, ps.
    sample_every : int
        MD steps between recorded frames.
    min_length : float
        Each perpendicular width of the supercell is at least this, Å.
    max_atoms : int
        Refuse supercells larger than this (a clear error instead of a week of MD).
    specie : str
        The mobile ion (``"Li"``).
    hop_distance : float
        Typical hop length used to count effective hops, Å.
    min_hops : float
        Effective hops needed before a temperature's diffusivity is used.
    thermostat_damping : float
        Nosé-Hoover chain time constant in time steps (ASE recommends 100).
    seed : int
        Seed of the initial Maxwell-Boltzmann velocities.
    """

    temperatures: tuple[float, ...] = (600.0, 800.0, 1000.0, 1200.0)
    time_step: float = 2.0
    equilibration_ps: float = 5.0
    production_ps: float = 50.0
    sample_every: int = 5
    min_length: float = 10.0
    max_atoms: int = 400
    specie: str = "Li"
    hop_distance: float = 2.5
    min_hops: float = 20.0
    thermostat_damping: float = 100.0
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["temperatures"] = list(self.temperatures)
        return d


def supercell_matrix(structure: Structure, min_length: float) -> list[int]:
    """Diagonal repetitions so that every perpendicular cell width is ≥ ``min_length``.

    The width along lattice vector ``i`` is ``V / |a_j × a_k|``, the distance between
    opposite faces, which is what limits periodic self-interaction.
    """
    m = structure.lattice.matrix
    volume = abs(np.linalg.det(m))
    reps = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        width = volume / np.linalg.norm(np.cross(m[j], m[k]))
        reps.append(max(1, math.ceil(min_length / width - 1e-9)))
    return reps


def make_supercell(structure: Structure, settings: MDSettings) -> Structure:
    """The MD cell for ``structure``; ``ValueError`` if it has no mobile ion, no other
    element (no framework) or the supercell would exceed ``settings.max_atoms``."""
    if settings.specie not in {el.symbol for el in structure.composition.elements}:
        raise ValueError(
            f"{structure.composition.reduced_formula} contains no {settings.specie}")
    if len(structure.composition.elements) < 2:
        raise ValueError(
            f"{structure.composition.reduced_formula}: no host framework (ionic "
            "conductivity is that of an ion moving through other atoms)")
    reps = supercell_matrix(structure, settings.min_length)
    n = len(structure) * int(np.prod(reps))
    if n > settings.max_atoms:
        raise ValueError(
            f"{structure.composition.reduced_formula}: a {reps} supercell has {n} "
            f"atoms > max_atoms={settings.max_atoms}; lower min_length or raise "
            "max_atoms")
    return structure.make_supercell(reps, in_place=False)


def chgnet_calculator(device: str = "cpu") -> Calculator:
    """CHGNet (weights inside the chgnet wheel, nothing downloaded) as an ASE
    calculator."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    model = CHGNet.load(verbose=False)
    return CHGNetCalculator(model=model, use_device=device)


def mace_calculator(path: str, device: str = "cpu") -> Calculator:
    """A MACE model file (e.g. from ``flywheel potential export``) as a calculator."""
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=str(path), device=device,
                          default_dtype="float64")


def load_calculator(potential: str, device: str = "cpu") -> Calculator:
    """``"chgnet"`` or the path of a MACE model file."""
    if potential.lower() == "chgnet":
        return chgnet_calculator(device)
    from pathlib import Path

    if not Path(potential).is_file():
        raise FileNotFoundError(
            f"potential {potential!r}: not 'chgnet' and not a MACE model file")
    return mace_calculator(potential, device)


@dataclass
class MDRun:
    """One NVT run: recorded displacements and what happened.

    ``displacements`` has shape ``(n_atoms, n_frames, 3)``: Cartesian displacement of
    every atom from its position at the start of production, Å (unwrapped: ASE MD
    never wraps positions).
    """

    temperature: float
    displacements: np.ndarray
    time_step: float
    sample_every: int
    mean_temperature: float
    seconds: float
    steps: int
    energy_start: float
    energy_end: float
    info: dict[str, Any] = field(default_factory=dict)


def run_nvt(
    structure: Structure,
    calculator: Calculator,
    temperature: float,
    settings: MDSettings,
    progress: Callable[[int, int], None] | None = None,
) -> MDRun:
    """NVT (Nosé-Hoover chain) MD of ``structure`` at ``temperature`` K.

    Velocities are drawn from a Maxwell-Boltzmann distribution (seeded, zero total
    momentum); ``settings.equilibration_ps`` is discarded, then every
    ``settings.sample_every`` steps of ``settings.production_ps`` are recorded.
    """
    from ase import units
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator
    rng = np.random.default_rng(settings.seed + int(temperature))
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dt = settings.time_step * units.fs
    dyn = NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature,
                             tdamp=settings.thermostat_damping * dt)
    n_eq = round(settings.equilibration_ps * 1000 / settings.time_step)
    n_prod = round(settings.production_ps * 1000 / settings.time_step)
    n_frames = n_prod // settings.sample_every + 1
    if n_frames < 3:
        raise ValueError("production_ps too short for sample_every")
    total = n_eq + n_prod
    start = time.perf_counter()
    done = 0

    def advance(steps: int) -> None:
        nonlocal done
        chunk = max(1, settings.sample_every)
        while steps > 0:
            k = min(chunk, steps)
            dyn.run(k)
            steps -= k
            done += k
            if progress is not None:
                progress(done, total)

    energy_start = float(atoms.get_potential_energy())
    if n_eq:
        advance(n_eq)
    origin = atoms.get_positions().copy()
    disp = np.empty((len(atoms), n_frames, 3), dtype=np.float32)
    disp[:, 0] = 0.0
    temps = []
    for f in range(1, n_frames):
        advance(settings.sample_every)
        disp[:, f] = atoms.get_positions() - origin
        temps.append(atoms.get_temperature())
    return MDRun(
        temperature=float(temperature),
        displacements=disp,
        time_step=settings.time_step,
        sample_every=settings.sample_every,
        mean_temperature=float(np.mean(temps)),
        seconds=time.perf_counter() - start,
        steps=total,
        energy_start=energy_start,
        energy_end=float(atoms.get_potential_energy()),
    )


#: Diffusivity of the framework atoms (cm²/s; slope of their drift-corrected MSD over
#: the second half of the run) above which the host counts as flowing: molten or
#: decomposing. A solid's framework atoms vibrate and librate about their sites, so
#: their MSD plateaus (the slope is noise, well below this); 2e-6 cm²/s is an MSD
#: growing by 1.2 Å² per 10 ps. Amplitudes do not decide: PS4 librations in LGPS give
#: a framework RMS displacement of 0.9 Å and single excursions of 2.2 Å at 1200 K
#: within 1.6 ps, with no flow.
MAX_FRAMEWORK_DIFFUSIVITY = 2e-6


def effective_hops(diffusivity: float, n_mobile: int, t_fs: float,
                   hop_distance: float) -> float:
    """He et al.'s number of effective hops: the total mean-square displacement the
    fitted diffusivity implies over the run (``6 D t`` per ion, times the ions),
    divided by the squared hop distance. Vibrations add no slope, so a lattice that
    only vibrates counts no hops."""
    d_a2_fs = diffusivity * 10.0  # cm²/s -> Å²/fs
    return n_mobile * 6.0 * d_a2_fs * t_fs / hop_distance**2


def framework_flow(run: MDRun, framework: Sequence[int]) -> tuple[float, float]:
    """``(diffusivity cm²/s, final RMS displacement Å)`` of the framework atoms, drift
    of the framework as a whole removed; the diffusivity from the slope of their MSD
    over the second half of the run (zero for a solid, up to noise)."""
    if not framework:
        return 0.0, 0.0
    fw = run.displacements[list(framework)].astype(float)
    fw -= fw.mean(axis=0, keepdims=True)
    msd = np.mean(np.sum(fw**2, axis=2), axis=0)  # per frame, Å²
    t = np.arange(len(msd)) * run.sample_every * run.time_step  # fs
    half = len(msd) // 2
    slope = float(np.polyfit(t[half:], msd[half:], 1)[0]) if len(msd) - half >= 2 \
        else 0.0
    return max(slope, 0.0) / 6.0 * 0.1, float(np.sqrt(msd[-1]))


def relative_error(n_eff: float) -> float:
    """He et al. (2018) relative standard deviation of an MD diffusivity."""
    return 3.43 / math.sqrt(n_eff) + 0.04 if n_eff > 0 else math.inf


def analyze_run(structure: Structure, run: MDRun, settings: MDSettings) -> dict[str, Any]:
    """Diffusivity and conductivity at one temperature (pymatgen DiffusionAnalyzer).

    ``structure`` is the MD cell (the supercell the run started from). Returns plain
    numbers: ``diffusivity`` (cm²/s), ``conductivity`` (mS/cm), their standard
    deviations from He et al., the effective hops ``n_eff``, per-direction
    diffusivities, the largest framework displacement (Å; large values mean the
    framework melted or decomposed), ``framework_rms`` and ``framework_unstable``
    (framework diffusivity past :data:`MAX_FRAMEWORK_DIFFUSIVITY`) and ``measurable`` (``n_eff ≥ min_hops`` and
    an intact framework). Unresolved diffusion gets ``diffusivity_upper`` and
    ``conductivity_upper``: the values that would have given ``min_hops`` hops.
    """
    from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer

    args = (structure, run.displacements.astype(float), settings.specie,
            run.temperature, run.time_step, run.sample_every)
    smoothing = "max"
    try:
        da = DiffusionAnalyzer(*args, smoothed="max")
    except ValueError:
        # Too short or too few ions for time-origin averaging beyond 1 ps: the plain
        # MSD from the first frame (noisier; the run is flagged).
        smoothing = "none"
        logger.warning("%.0f K: run too short for smoothed MSD; using one time "
                       "origin", run.temperature)
        da = DiffusionAnalyzer(*args, smoothed=False)
    mobile = [i for i, s in enumerate(structure) if s.specie.symbol == settings.specie]
    framework = [i for i in range(len(structure)) if i not in set(mobile)]
    framework_d, framework_rms = framework_flow(run, framework)
    out = {
        "temperature": run.temperature,
        "mean_temperature": run.mean_temperature,
        "diffusivity": max(float(da.diffusivity), 0.0),
        "conductivity": max(float(da.conductivity), 0.0),
        "diffusivity_components": [float(x) for x in da.diffusivity_components],
        "max_framework_displacement": float(da.max_framework_displacement),
        "framework_rms": framework_rms,
        "framework_diffusivity": framework_d,
        "smoothing": smoothing,
        "haven_ratio": _finite(getattr(da, "haven_ratio", None)),
        "production_ps": (run.displacements.shape[1] - 1) * run.sample_every
        * run.time_step / 1000.0,
        "seconds": run.seconds,
    }
    return classify(out, structure, settings)


def classify(row: dict[str, Any], structure: Structure,
             settings: MDSettings) -> dict[str, Any]:
    """Hops, error bars, ``measurable`` and the bounds of one temperature's result
    from its ``diffusivity``, ``conductivity``, ``production_ps`` and (when
    recorded) ``framework_diffusivity``; ``structure`` is the MD cell. Returns a new
    row (used by :func:`analyze_run` and to re-judge stored rows)."""
    row = {k: v for k, v in row.items()
           if k not in ("diffusivity_upper", "conductivity_upper")}
    n_mobile = sum(1 for x in structure if x.specie.symbol == settings.specie)
    t_fs = row["production_ps"] * 1000.0
    d, sigma = row["diffusivity"], row["conductivity"]
    n_eff = effective_hops(d, n_mobile, t_fs, settings.hop_distance)
    rel = relative_error(n_eff)
    framework_ok = row.get("framework_diffusivity", 0.0) < MAX_FRAMEWORK_DIFFUSIVITY
    row.update(
        n_eff=n_eff,
        diffusivity_std=d * rel if math.isfinite(rel) else None,
        conductivity_std=sigma * rel if math.isfinite(rel) else None,
        measurable=bool(n_eff >= settings.min_hops and d > 0 and framework_ok),
        framework_unstable=not framework_ok,
    )
    if not row["measurable"] and framework_ok:
        # Fewer than min_hops effective hops: D is below what this run resolves.
        d_limit = settings.min_hops * settings.hop_distance**2 / (
            6.0 * n_mobile * t_fs) * 0.1  # Å²/fs -> cm²/s
        row["diffusivity_upper"] = d_limit
        row["conductivity_upper"] = d_limit * _sigma_per_d(structure, settings.specie,
                                                           row["temperature"])
    return row


def _finite(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _sigma_per_d(structure: Structure, specie: str, temperature: float) -> float:
    """mS/cm per cm²/s (Nernst-Einstein, pymatgen's conversion factor)."""
    from pymatgen.analysis.diffusion.analyzer import get_conversion_factor

    return float(get_conversion_factor(structure, specie, temperature))


def arrhenius(structure: Structure, per_temperature: Sequence[dict[str, Any]],
              settings: MDSettings, target: float = 300.0) -> dict[str, Any]:
    """Activation energy and the conductivity extrapolated to ``target`` K.

    Only temperatures with measurable diffusion and an intact framework enter the
    fit: weighted least squares of ln D against 1/T, each point weighted by the
    inverse of its He et al. relative error. Ea, D(target), their 1-σ errors and the
    1-σ range of σ(target) all come from that one fit and its covariance; the
    Nernst-Einstein conversion is pymatgen-analysis-diffusion's
    ``get_conversion_factor`` for ``structure`` (the MD cell).

    Returns ``status``: ``"fit"``, ``"no diffusion"`` (no temperature resolved any;
    each temperature's ``conductivity_upper`` bounds it) or ``"one temperature"``.
    """
    rows = [r for r in per_temperature
            if r["measurable"] and not r.get("framework_unstable", False)]
    out: dict[str, Any] = {
        "target_temperature": target,
        "fit_temperatures": [r["temperature"] for r in rows],
        "activation_energy": None, "activation_energy_std": None,
        "diffusivity_target": None, "conductivity_target": None,
        "conductivity_target_range": None,
    }
    if len(rows) < 2:
        out["status"] = "no diffusion" if not rows else "one temperature"
        return out
    temps = np.array([r["temperature"] for r in rows], dtype=float)
    ds = np.array([r["diffusivity"] for r in rows], dtype=float)
    errs = np.array([r["diffusivity_std"] for r in rows], dtype=float)
    # ln D = a + b / T with sigma(ln D) = sigma_D / D: weights 1/sigma(ln D).
    (b, a), cov = np.polyfit(1.0 / temps, np.log(ds), 1, w=ds / errs, cov="unscaled")
    xt = np.array([1.0 / target, 1.0])
    ln_d = float(xt @ np.array([b, a]))
    sd = float(math.sqrt(max(xt @ cov @ xt, 0.0)))
    d_t = math.exp(ln_d)
    s_t = d_t * _sigma_per_d(structure, settings.specie, target)
    out.update(status="fit", activation_energy=float(-b * KB),
               activation_energy_std=float(math.sqrt(cov[0, 0]) * KB),
               diffusivity_target=d_t, conductivity_target=s_t,
               conductivity_target_range=[s_t * math.exp(-sd), s_t * math.exp(sd)])
    return out
