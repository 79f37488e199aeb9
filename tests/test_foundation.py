"""filter.foundation_model: fine-tuning from a local MACE file beats training from
scratch on little data. The foundation model is trained here, on EMT-labelled fcc
Cu-Al-Ni cells; the task is bcc-based Cu-Al cells, 16 for training, 40 held out.
"""

from __future__ import annotations

import numpy as np
import pytest


def _frames(n, lattice, elements, a, seed):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", lattice, a=a, cubic=True).repeat((2, 1, 1))
        atoms.set_chemical_symbols(list(rng.choice(elements, size=len(atoms))))
        atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.03, 0.03)), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.info["REF_stress"] = atoms.get_stress()
        atoms.calc = None
        frames.append(atoms)
    return frames


def _mae(model_path, frames):
    from flywheel.makers.filter.core import load_models, predict_energies

    pred = predict_energies(load_models([model_path]), frames)[0]
    true = np.array([f.info["REF_energy"] / len(f) for f in frames])
    return float(np.mean(np.abs(pred - true)))


@pytest.mark.slow
def test_fine_tuning_from_a_foundation_file_beats_scratch(tmp_path):
    from flywheel.makers.train.core import (
        MaceTrainSettings,
        frames_to_extxyz,
        train_mace_model,
    )

    base = MaceTrainSettings(num_channels=8, r_max=4.0, max_num_epochs=30,
                             batch_size=8, warm_start_epochs=30, stress_weight=0.0)
    foundation = train_mace_model(
        frames_to_extxyz(_frames(80, "fcc", ["Cu", "Al", "Ni"], 3.7, 0),
                         tmp_path / "foundation.xyz"),
        tmp_path / "foundation", seed=1, settings=base, name="foundation")
    task = frames_to_extxyz(_frames(16, "bcc", ["Cu", "Al"], 2.95, 1),
                            tmp_path / "task.xyz")
    held_out = _frames(40, "bcc", ["Cu", "Al"], 2.95, 2)
    tuned = train_mace_model(task, tmp_path / "tuned", seed=2, settings=base,
                             warm_start=foundation, name="tuned")
    scratch = train_mace_model(task, tmp_path / "scratch", seed=2, settings=base,
                               name="scratch")
    tuned_mae, scratch_mae = _mae(tuned, held_out), _mae(scratch, held_out)
    assert tuned_mae < 0.7 * scratch_mae, (tuned_mae, scratch_mae)


def test_a_foundation_without_the_campaign_elements_is_refused(tmp_path):
    from ase import Atoms

    from flywheel.makers.train.core import (
        MaceTrainSettings,
        frames_to_extxyz,
        train_mace_model,
    )
    from flywheel.makers.train.jobs import check_foundation

    frames = _frames(6, "fcc", ["Cu", "Al"], 3.7, 3)
    model = train_mace_model(
        frames_to_extxyz(frames, tmp_path / "f.xyz"), tmp_path / "f", seed=0,
        settings=MaceTrainSettings(num_channels=4, r_max=3.5, max_num_epochs=1),
        name="f")
    check_foundation(model, frames)  # knows Cu and Al
    with pytest.raises(RuntimeError, match="does not know Li, O"):
        check_foundation(model, [*frames, Atoms("LiO", positions=[[0, 0, 0],
                                                                    [1.6, 0, 0]])])
    (tmp_path / "junk.model").write_text("not a model")
    with pytest.raises(RuntimeError, match="not a MACE model file"):
        check_foundation(tmp_path / "junk.model", frames)
