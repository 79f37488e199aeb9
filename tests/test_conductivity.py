"""MD conductivity core: supercells, a short CHGNet NVT run of LGPS, the analysis and
the Arrhenius fit (real MD and pymatgen-analysis-diffusion; no stand-ins)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from flywheel.makers.conductivity.core import (
    KB,
    MDRun,
    MDSettings,
    analyze_run,
    arrhenius,
    chgnet_calculator,
    make_supercell,
    relative_error,
    run_nvt,
    supercell_matrix,
)

ROOT = Path(__file__).resolve().parents[1]
LGPS = ROOT / "examples" / "structures" / "Li10GeP2S12.cif"


def lgps() -> Structure:
    return Structure.from_file(LGPS)


def li2o_primitive(a: float = 4.61) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Li", "O"],
                                     [[0.25, 0.25, 0.25], [0, 0, 0]]
                                     ).get_primitive_structure()


def test_supercell_widths():
    s = lgps()
    assert s.composition.reduced_formula == "Li10Ge(PS6)2"
    assert len(s) == 50
    assert supercell_matrix(s, 8.0) == [1, 1, 1]
    assert supercell_matrix(s, 10.0) == [2, 2, 1]
    assert supercell_matrix(s, 13.0) == [2, 2, 2]
    # fcc primitive cell: the face-to-face width is a/sqrt(3), not the 3.26 Å vector
    p = li2o_primitive()
    assert len(p) == 3
    assert supercell_matrix(p, 8.0) == [4, 4, 4]  # 4.61/sqrt(3) = 2.66 Å per cell
    cell = make_supercell(p, MDSettings(min_length=7.9))
    assert len(cell) == 81
    with pytest.raises(ValueError, match="max_atoms=100"):
        make_supercell(p, MDSettings(min_length=10.0, max_atoms=100))
    with pytest.raises(ValueError, match="contains no Li"):
        make_supercell(Structure(Lattice.cubic(3), ["Na"], [[0, 0, 0]]), MDSettings())


def _arrhenius_rows(structure, ea, d300, temps, rel=0.1):
    rows = []
    for t in temps:
        d = d300 * math.exp(-ea / KB * (1 / t - 1 / 300))
        rows.append({"temperature": t, "diffusivity": d, "diffusivity_std": rel * d,
                     "measurable": True, "framework_unstable": False})
    return rows


def test_arrhenius_recovers_the_law_and_nernst_einstein():
    from pymatgen.analysis.diffusion.analyzer import get_conversion_factor

    s = lgps()
    st = MDSettings()
    rows = _arrhenius_rows(s, 0.25, 1e-7, [600.0, 800.0, 1000.0, 1200.0])
    fit = arrhenius(s, rows, st)
    assert fit["status"] == "fit"
    assert fit["activation_energy"] == pytest.approx(0.25, rel=1e-6)
    assert fit["diffusivity_target"] == pytest.approx(1e-7, rel=1e-6)
    # Nernst-Einstein by hand: sigma = n q^2 D / (kT), n = Li per volume
    n_li = 20 / (s.volume * 1e-24)  # cm^-3
    q = 1.602176634e-19
    sigma = n_li * q**2 * 1e-7 / (1.380649e-23 * 300) * 1000  # mS/cm
    assert fit["conductivity_target"] == pytest.approx(sigma, rel=1e-3)
    assert get_conversion_factor(s, "Li", 300) * 1e-7 == pytest.approx(sigma, rel=1e-3)
    # LGPS-like numbers: tens of mS/cm... this D gives ~ 7 mS/cm
    assert 1 < fit["conductivity_target"] < 20
    lo, hi = fit["conductivity_target_range"]
    assert lo < fit["conductivity_target"] < hi
    # 10 % errors at T >= 600 K extrapolated to 300 K widen to tens of percent
    assert 1.05 < hi / fit["conductivity_target"] < 3


def test_arrhenius_uses_only_resolved_temperatures():
    s = lgps()
    st = MDSettings()
    rows = _arrhenius_rows(s, 0.3, 1e-8, [800.0, 1000.0, 1200.0])
    rows[0]["measurable"] = False  # too few hops at 800 K
    rows[2]["framework_unstable"] = True  # melted at 1200 K
    fit = arrhenius(s, rows, st)
    assert fit["status"] == "one temperature"
    assert fit["fit_temperatures"] == [1000.0]
    assert fit["activation_energy"] is None and fit["conductivity_target"] is None
    for r in rows:
        r["measurable"] = False
    assert arrhenius(s, rows, st)["status"] == "no diffusion"


def test_vibrating_lattice_is_below_detection_with_a_bound():
    """Displacements of ions that only vibrate (no hops): no measurable diffusion,
    and the reported upper bound follows from min_hops hops in the run."""
    s = make_supercell(li2o_primitive(), MDSettings(min_length=5.0))
    rng = np.random.default_rng(0)
    n_frames = 601  # 6 ps at 10 fs
    disp = rng.normal(0.0, 0.15, size=(len(s), n_frames, 3)).astype(np.float32)
    disp[:, 0] = 0.0
    st = MDSettings(min_length=5.0)
    run = MDRun(temperature=600.0, displacements=disp, time_step=2.0, sample_every=5,
                mean_temperature=600.0, seconds=0.0, steps=3000, energy_start=0.0,
                energy_end=0.0)
    row = analyze_run(s, run, st)
    assert not row["measurable"]
    n_li = sum(1 for x in s if x.specie.symbol == "Li")
    bound = st.min_hops * st.hop_distance**2 / (6 * n_li * 6000.0) * 0.1
    assert row["diffusivity_upper"] == pytest.approx(bound)
    assert row["conductivity_upper"] > 0
    assert relative_error(100) == pytest.approx(3.43 / 10 + 0.04)
    assert row["framework_rms"] < 0.5 and not row["framework_unstable"]
    assert row["framework_diffusivity"] < 1e-6
    # the same cell with every atom random-walking (a melt): flagged, no bound
    steps = rng.normal(0.0, 0.12, size=(len(s), n_frames, 3)).astype(np.float32)
    steps[:, 0] = 0.0
    run.displacements = np.cumsum(steps, axis=1)
    melt = analyze_run(s, run, st)
    assert melt["framework_unstable"] and melt["framework_rms"] > 1.0
    assert melt["framework_diffusivity"] == pytest.approx(7.2e-5, rel=0.3)
    assert not melt["measurable"] and "diffusivity_upper" not in melt


@pytest.mark.slow
def test_short_chgnet_md_of_lgps_diffuses():
    """1.6 ps of CHGNet NVT MD of the 50-atom LGPS cell at 1200 K: Li diffuses, the
    framework holds, the thermostat holds the temperature; long enough for
    DiffusionAnalyzer's time-origin averaging beyond 1 ps."""
    import torch

    torch.set_num_threads(1)
    s = lgps()
    st = MDSettings(equilibration_ps=0.1, production_ps=1.6, min_length=8.0)
    cell = make_supercell(s, st)
    run = run_nvt(cell, chgnet_calculator(), 1200.0, st)
    assert run.displacements.shape == (50, 161, 3)
    assert abs(run.mean_temperature - 1200.0) < 200.0
    row = analyze_run(cell, run, st)
    assert row["smoothing"] == "max"
    li = [i for i, x in enumerate(cell) if x.specie.symbol == "Li"]
    # the analyzer's D against the plain final MSD of Li (one time origin)
    msd = float(np.mean(np.sum(run.displacements[li, -1].astype(float) ** 2, axis=1)))
    d_plain = msd / (6 * 1600.0) * 0.1  # Å²/fs -> cm²/s
    assert row["diffusivity"] > 1e-6
    assert 0.2 < row["diffusivity"] / d_plain < 5
    assert not row["framework_unstable"]  # PS4 librations, not flow
    assert row["framework_diffusivity"] < 0.05 * row["diffusivity"]
    assert row["n_eff"] > 5
    assert row["conductivity"] > 10  # mS/cm at 1200 K


def test_arrhenius_is_weighted_by_the_errors():
    """A noisy point (few hops, large error) barely moves the fit; with equal
    weights it would."""
    s = lgps()
    rows = _arrhenius_rows(s, 0.25, 1e-7, [600.0, 800.0, 1000.0, 1200.0])
    rows[0]["diffusivity"] *= 4.0  # off the line ...
    rows[0]["diffusivity_std"] = 20.0 * rows[0]["diffusivity"]  # ... and uncertain
    fit = arrhenius(s, rows, MDSettings())
    assert fit["activation_energy"] == pytest.approx(0.25, abs=0.002)
    x = 1 / np.array([r["temperature"] for r in rows])
    y = np.log([r["diffusivity"] for r in rows])
    unweighted = -np.polyfit(x, y, 1)[0] * KB
    assert unweighted < 0.2  # what an unweighted fit would report
    assert fit["activation_energy_std"] > 0
