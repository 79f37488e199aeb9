"""The CP2K oracle: one real DFT relaxation (CP2K 2023.1 from Debian) of a strained
2-atom Si cell, checked against an energy computed and recorded here, plus failure
cases that need no CP2K.

The relaxation uses ``Cp2kSettings.light()``: PBE, DZVP-MOLOPT-SR-GTH + GTH-PBE-q4,
150 Ry (Si's energy at 150 and 300 Ry agrees to 3e-6 eV), Γ-centred 5x5x5 k-points,
RKS, no smearing. About 25 s on 2 cores with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest

from flywheel.config import OracleConfig
from flywheel.makers.relax.cp2k import (
    Cp2kSettings,
    cp2k_available,
    kpoint_mesh,
    relax_cp2k,
)
from tests.structures import fcc

A0 = 5.55  # Å, 1.6% above this setting's lattice constant (5.464 Å)
# Recorded from this test's own run (CP2K 2023.1, Debian bookworm package), eV/cell.
# BFGS + FrechetCellFilter, fmax 0.05 eV/Å: 2 steps, a 5.55 -> 5.464 Å.
SI_ENERGY = -214.173228
ENERGY_TOL = 1e-3  # eV; the minimum is flat, so step-count differences cost < 1e-5

needs_cp2k = pytest.mark.skipif(
    not cp2k_available(), reason="CP2K not installed (apt-get install -y cp2k)"
)


def si_diamond(a: float = A0):
    from pymatgen.core import Structure

    return Structure(fcc(a), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])


@pytest.fixture(scope="module")
def si_result(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("cp2k_scratch")
    # Through the campaign's configuration and the oracle seam, with the light
    # settings of Cp2kSettings.light() written as oracle.cp2k fields.
    from flywheel.makers.relax import run

    config = OracleConfig(
        backend="cp2k", fmax=0.05, steps=30, relax_cell=True, max_frames=12,
        cp2k={"cutoff": 150.0, "rel_cutoff": 40.0, "kpoint_spacing": 0.4,
              "uks": False, "smearing_kelvin": None, "mixing_alpha": 0.3,
              "scratch_dir": str(scratch)},
    )
    assert Cp2kSettings.from_config(config) == Cp2kSettings.light(
        scratch_dir=str(scratch))
    seen = []
    results = run.run_oracle([si_diamond()], config,
                             on_result=lambda i, r: seen.append(i))
    return results, seen, scratch


@needs_cp2k
@pytest.mark.slow
def test_cp2k_relaxes_strained_si(si_result):
    results, seen, scratch = si_result
    assert seen == [0]
    assert len(results) == 1
    r = results[0]
    assert r.ok, r.error
    assert r.converged
    assert abs(r.energy - SI_ENERGY) < ENERGY_TOL, r.energy

    # The cell shrank towards the PBE lattice constant and stayed cubic.
    s = r.structure
    a_conv = (4 * s.volume) ** (1 / 3)
    assert s.volume < si_diamond().volume
    assert 5.40 < a_conv < 5.52, a_conv
    assert np.allclose(s.lattice.angles, 60.0, atol=0.05)
    assert np.allclose(s.lattice.abc, s.lattice.abc[0], atol=1e-3)

    # Frames: every force evaluation (initial one included), labelled like the
    # CHGNet oracle's: energy (eV), forces (n, 3) eV/Å, Voigt-6 stress eV/Å³, ASE sign.
    assert 2 <= len(r.frames) <= 12
    assert len(r.frames) == r.n_steps + 1 == r.details["force_evaluations"]
    for f in r.frames:
        assert len(f) == 2
        assert f.pbc.all()
        assert isinstance(f.info["REF_energy"], float)
        assert f.arrays["REF_forces"].shape == (2, 3)
        assert f.info["REF_stress"].shape == (6,)
    first, last = r.frames[0], r.frames[-1]
    assert np.isclose(first.get_volume(), si_diamond().volume)
    assert last.info["REF_energy"] == pytest.approx(r.energy, abs=1e-8)
    assert first.info["REF_energy"] > last.info["REF_energy"]
    # Stretched cell: tensile, i.e. positive in ASE's convention (CP2K's is opposite).
    assert np.all(first.info["REF_stress"][:3] > 0.01)
    stress0 = np.abs(first.info["REF_stress"]).max()
    assert np.abs(last.info["REF_stress"]).max() < stress0 / 5
    assert np.abs(last.arrays["REF_forces"]).max() < 0.05

    assert r.details["kpoint_mesh"] == [5, 5, 5]
    assert r.details["kinds"]["Si"]["potential"] == "GTH-PBE-q4"
    # The working directory was removed.
    assert list(scratch.iterdir()) == []


def test_missing_executable_is_a_failed_result():
    seen = []
    results = relax_cp2k([si_diamond(), si_diamond(5.4)], OracleConfig(),
                         on_result=lambda i, r: seen.append((i, r.ok)),
                         settings=Cp2kSettings.light(command="no-such-cp2k-shell"))
    assert seen == [(0, False), (1, False)]
    for r in results:
        assert r.structure is None
        assert r.energy is None
        assert "no-such-cp2k-shell" in r.error
        assert "apt-get install" in r.error


def test_broken_executable_is_a_failed_result(tmp_path):
    """An executable that runs but is no CP2K shell: the error is recorded, not raised,
    and the working directory is removed.
    """
    results = relax_cp2k([si_diamond()], OracleConfig(),
                         settings=Cp2kSettings.light(command="true",
                                                     scratch_dir=str(tmp_path)))
    assert "did not start" in results[0].error
    assert not results[0].ok
    assert list(tmp_path.iterdir()) == []


def test_kpoint_mesh_is_gamma_centred():
    cell = si_diamond().lattice.matrix
    assert kpoint_mesh(cell, 0.4) == (5, 5, 5)
    assert kpoint_mesh(cell, 0.25) == (9, 9, 9)  # 8 rounded up to odd
    assert kpoint_mesh(cell, 0) == (1, 1, 1)
    assert kpoint_mesh(np.diag([5.0, 10.0, 20.0]), 0.3) == (5, 3, 3)


def test_settings_from_config():
    assert Cp2kSettings.from_config(OracleConfig()) == Cp2kSettings()

    class Flat:
        cp2k_cutoff = 300.0
        cp2k_command = "srun cp2k_shell.psmp"

    s = Cp2kSettings.from_config(Flat())
    assert s.cutoff == 300.0
    assert s.command == "srun cp2k_shell.psmp"

    class Nested:
        cp2k = MappingProxyType({"cutoff": 250.0, "uks": True, "unknown": 1})

    s = Cp2kSettings.from_config(Nested())
    assert s.cutoff == 250.0
    assert s.uks is True
