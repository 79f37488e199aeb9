"""MACE training and batched ensemble prediction on a small real EMT data set.

The data are rattled, strained fcc Cu, Al and Cu-Al cells (2-8 atoms) labelled
with ASE's EMT calculator (energies, forces, stresses).  The expensive models
are trained once per module and shared between tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flywheel.makers.filter.core import (
    load_models,
    predict_energies,
    predict_energies_ase_loop,
)
from flywheel.makers.train.core import (
    MaceTrainSettings,
    frames_to_extxyz,
    read_validation_curve,
    train_ensemble,
    train_mace_model,
)

N_TRAIN, N_EXTRA, N_TEST = 60, 20, 20
EPOCHS = 10
# Tiny but real: the architecture defaults, fewer epochs.
SETTINGS = MaceTrainSettings(max_num_epochs=EPOCHS)


def _prototypes():
    from ase.build import bulk

    cells = [
        bulk("Cu", "fcc", a=3.61).repeat((2, 1, 1)),
        bulk("Al", "fcc", a=4.05).repeat((2, 1, 1)),
        bulk("Cu", "fcc", a=3.61, cubic=True),
        bulk("Al", "fcc", a=4.05, cubic=True),
    ]
    cual = bulk("Cu", "fcc", a=3.85).repeat((2, 1, 1))
    cual.symbols[1] = "Al"
    l10 = bulk("Cu", "fcc", a=3.8, cubic=True)
    l10.symbols[[1, 3]] = "Al"
    al3cu = bulk("Al", "fcc", a=3.9, cubic=True)
    al3cu.symbols[0] = "Cu"
    big = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    big.symbols[[0, 5]] = "Al"
    return [*cells, cual, l10, al3cu, big]


def make_emt_frames(n: int, seed: int = 0) -> list:
    """Rattled + strained Cu/Al/CuAl cells labelled with EMT (REF_* keys)."""
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    protos = _prototypes()
    frames = []
    for _ in range(n):
        atoms = protos[int(rng.integers(len(protos)))].copy()
        strain = np.eye(3) + rng.normal(0.0, 0.03, (3, 3))
        atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.info["REF_stress"] = atoms.get_stress()  # Voigt, eV/Å^3
        frames.append(atoms)
    return frames


def _per_atom(frames) -> np.ndarray:
    return np.array([a.info["REF_energy"] / len(a) for a in frames])


def _e0_only_prediction(train, test) -> np.ndarray:
    """Energy per atom from least-squares elemental energies (MACE's E0s='average')."""
    zs = sorted({int(z) for a in train + test for z in a.numbers})

    def counts(frames):
        return np.array([[np.sum(a.numbers == z) for z in zs] for a in frames], float)

    e0, *_ = np.linalg.lstsq(
        counts(train), np.array([a.info["REF_energy"] for a in train]), rcond=None
    )
    return counts(test) @ e0 / np.array([len(a) for a in test])


@pytest.fixture(scope="module")
def data():
    """Train, extra (next round) and held-out test frames."""
    frames = make_emt_frames(N_TRAIN + N_EXTRA + N_TEST, seed=1)
    return {
        "train": frames[:N_TRAIN],
        "extra": frames[N_TRAIN : N_TRAIN + N_EXTRA],
        "test": frames[N_TRAIN + N_EXTRA :],
    }


@pytest.fixture(scope="module")
def ensemble(data, tmp_path_factory) -> list[Path]:
    """Two members trained on the train split (shared by the slow tests)."""
    workdir = tmp_path_factory.mktemp("ensemble")
    return train_ensemble(data["train"], workdir, n_models=2, settings=SETTINGS)


def test_frames_to_extxyz_roundtrip(tmp_path, data):
    """Labels survive the extxyz round trip and MACE parses them."""
    import ase.io
    from mace import data as mace_data

    frames = [a.copy() for a in data["train"][:3]]  # copies: fixture is shared
    frames[0].info["REF_stress"] = np.zeros((3, 3))  # 3x3 input is accepted too
    path = frames_to_extxyz(frames, tmp_path / "x" / "train.xyz")
    back = ase.io.read(path, index=":")
    assert len(back) == 3
    assert back[1].calc is None  # labels live only under the REF_* keys
    # extxyz stores per-atom arrays with 8 decimals
    np.testing.assert_allclose(
        back[1].info["REF_energy"], frames[1].info["REF_energy"], rtol=1e-12
    )
    np.testing.assert_allclose(
        back[1].arrays["REF_forces"], frames[1].arrays["REF_forces"], atol=1e-7
    )
    np.testing.assert_allclose(
        back[1].info["REF_stress"], frames[1].info["REF_stress"], rtol=1e-12
    )
    np.testing.assert_allclose(back[0].info["REF_stress"], np.zeros(6))
    # MACE's own parser sees energy, forces and stress with full weight.
    keyspec = mace_data.KeySpecification.from_defaults()
    config = mace_data.config_from_atoms(back[1], key_specification=keyspec)
    assert config.property_weights["stress"] == 1.0
    assert config.properties["forces"].shape == (len(frames[1]), 3)

    unlabelled = frames[0].copy()
    unlabelled.info.pop("REF_energy")
    with pytest.raises(ValueError, match="REF_energy"):
        frames_to_extxyz([unlabelled], tmp_path / "bad.xyz")


@pytest.mark.slow
def test_training_beats_elemental_baseline(data, ensemble):
    """Held-out energy error falls well below the E0-only model."""
    ref = _per_atom(data["test"])
    baseline_mae = np.abs(_e0_only_prediction(data["train"], data["test"]) - ref).mean()
    pred = predict_energies(load_models(ensemble), data["test"])
    mae = np.abs(pred - ref).mean(axis=1)
    # Measured: baseline 0.072 eV/atom, members 0.016-0.017 eV/atom.
    assert baseline_mae > 0.03
    assert np.all(mae < 0.5 * baseline_mae), (mae, baseline_mae)
    # Validation loss went down during training as well.
    for i, _ in enumerate(ensemble):
        log = ensemble[i].parent / f"model_{i}_train.log"
        curve = read_validation_curve(log)
        assert len(curve) == EPOCHS + 1
        assert min(c["loss"] for c in curve[1:]) < 0.2 * curve[0]["loss"]


@pytest.mark.slow
def test_batched_prediction_matches_ase_loop(data, ensemble):
    """Batched graphs give the calculator's energies; dtype is restored."""
    import torch
    from pymatgen.io.ase import AseAtomsAdaptor

    structures = [AseAtomsAdaptor.get_structure(a) for a in data["test"]]
    dtype = torch.get_default_dtype()
    batched = predict_energies(load_models(ensemble), structures, batch_size=7)
    assert torch.get_default_dtype() == dtype
    loop = predict_energies_ase_loop(ensemble, structures)
    assert torch.get_default_dtype() == dtype
    assert batched.shape == loop.shape == (2, N_TEST)
    np.testing.assert_allclose(batched, loop, rtol=0, atol=1e-5)
    # Float64 weights give the same answer to float32 rounding.
    as64 = predict_energies(load_models(ensemble, dtype="float64"), structures)
    np.testing.assert_allclose(as64, batched, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_seeds_differ_and_training_is_reproducible(data, ensemble, tmp_path):
    """Seeds decorrelate members; a fixed seed reproduces a member."""
    models = load_models(ensemble)
    pred = predict_energies(models, data["test"])
    spread = pred.std(axis=0)
    assert spread.mean() > 1e-4  # different seeds -> different members

    again = train_mace_model(
        ensemble[0].parent.parent / "train.xyz",
        tmp_path / "again",
        seed=0,
        settings=SETTINGS,
        name="model_0",
    )
    repeat = predict_energies(load_models([again]), data["test"])[0]
    np.testing.assert_allclose(repeat, pred[0], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_members_share_one_worker_process_without_changing_them(data, ensemble,
                                                                 tmp_path):
    """Both members were trained in one worker process (settings.parallel = 1); the
    second equals the same member trained alone in a fresh process; the report has
    the start-up and the seconds per epoch; a failing member is named and does not
    stop the next one."""
    from flywheel.makers.train.core import (
        _prepare_member,
        _train_group,
        training_report,
    )

    report = training_report(ensemble[0].parent.parent)
    assert report["workers"] == [{"members": [0, 1],
                                  "startup_s": report["workers"][0]["startup_s"]}]
    assert report["workers"][0]["startup_s"] > 0.5  # torch + MACE imports, once
    for member in report["members"]:
        assert 0 < member["seconds_per_epoch"] < member["seconds"] / EPOCHS
    xyz = ensemble[0].parent.parent / "train.xyz"
    alone = train_mace_model(xyz, tmp_path / "alone", seed=1, settings=SETTINGS,
                             name="model_1")
    np.testing.assert_allclose(
        predict_energies(load_models([alone]), data["test"])[0],
        predict_energies(load_models([ensemble[1]]), data["test"])[0],
        rtol=0, atol=1e-5)

    short = MaceTrainSettings(max_num_epochs=1)
    bad = _prepare_member(xyz, tmp_path / "bad", seed=0, settings=short,
                          warm_start=None, name="bad")
    bad["argv"].append("--max_L=not-a-number")
    good = _prepare_member(xyz, tmp_path / "good", seed=0, settings=short,
                           warm_start=None, name="good")
    with pytest.raises(RuntimeError, match="MACE training bad failed .*SystemExit"):
        _train_group([bad, good], short, tmp_path / "worker.json")
    assert Path(good["model"]).exists()
    assert "invalid int value" in (tmp_path / "bad" / "bad_train.log").read_text()


@pytest.mark.slow
def test_warm_start_beats_cold_start(data, ensemble, tmp_path):
    """Warm start begins from a far lower loss and ends more accurate."""
    # Next flywheel round: old data plus new frames, two short epochs each.
    xyz = frames_to_extxyz(data["train"] + data["extra"], tmp_path / "round2.xyz")
    short = MaceTrainSettings(max_num_epochs=2)
    warm = train_mace_model(
        xyz, tmp_path / "warm", seed=3, settings=short, warm_start=ensemble[0]
    )
    cold = train_mace_model(xyz, tmp_path / "cold", seed=3, settings=short)
    warm_curve = read_validation_curve(tmp_path / "warm" / "model_train.log")
    cold_curve = read_validation_curve(tmp_path / "cold" / "model_train.log")
    # Same seed -> same validation split; the warm start begins far lower.
    assert warm_curve[0]["loss"] < 0.1 * cold_curve[0]["loss"]
    assert min(c["loss"] for c in warm_curve) < min(c["loss"] for c in cold_curve)

    ref = _per_atom(data["test"])
    warm_mae, cold_mae = (
        np.abs(predict_energies(load_models([p]), data["test"])[0] - ref).mean()
        for p in (warm, cold)
    )
    baseline_mae = np.abs(_e0_only_prediction(data["train"], data["test"]) - ref).mean()
    assert warm_mae < 0.5 * baseline_mae
    assert warm_mae < cold_mae
