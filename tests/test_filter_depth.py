"""Filter at GNoME depth: TTA, calibration maths, budget split, composition model.

The MACE tests use two tiny models trained here on EMT-labelled Cu/Al cells
(seconds, not accuracy: they only have to be real MACE models).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flywheel.makers.filter.calibration import (
    CALIBRATED_MEAN_ABS_Z,
    calibration_report,
    classification_metrics,
    generator_budget_split,
)
from flywheel.makers.filter.tta import best_scale, predict_with_tta, scaled_copies
from flywheel.makers.generate.composition_model import (
    featurize,
    load_composition_model,
    predict_compositions,
    save_composition_model,
    train_composition_model,
)


# --------------------------------------------------------------------------- #
# Tiny MACE ensemble
# --------------------------------------------------------------------------- #
def _emt_frames(n: int, seed: int) -> list:
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=rng.uniform(3.5, 3.9), cubic=True)
        atoms.symbols[rng.random(len(atoms)) < 0.4] = "Al"
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two 8-channel MACE members, 2 epochs on 24 EMT frames (~15 s)."""
    from flywheel.makers.filter.core import load_models
    from flywheel.makers.train.core import MaceTrainSettings, train_ensemble

    settings = MaceTrainSettings(max_num_epochs=2, num_channels=8, stress_weight=0.0)
    paths = train_ensemble(
        _emt_frames(24, seed=0),
        tmp_path_factory.mktemp("tiny"),
        n_models=2,
        settings=settings,
    )
    return load_models(paths)


@pytest.fixture(scope="module")
def candidates():
    """Six Cu/Al cells without labels."""
    frames = _emt_frames(6, seed=5)
    for atoms in frames:
        atoms.calc = None
    return frames


def test_scaled_copies_scale_the_volume(candidates):
    """Linear and volume scalings give the expected volumes."""
    atoms = candidates[0]
    linear = scaled_copies(atoms, (0.9, 1.0, 1.1), kind="linear")
    volume = scaled_copies(atoms, (0.9, 1.0, 1.1), kind="volume")
    v0 = atoms.get_volume()
    np.testing.assert_allclose(
        [a.get_volume() / v0 for a in linear], [0.729, 1.0, 1.331], rtol=1e-12
    )
    np.testing.assert_allclose(
        [a.get_volume() / v0 for a in volume], [0.9, 1.0, 1.1], rtol=1e-12
    )
    # Fractional coordinates are kept; the input is not modified.
    np.testing.assert_allclose(
        linear[2].get_scaled_positions(), atoms.get_scaled_positions(), atol=1e-12
    )
    assert atoms.get_volume() == v0
    with pytest.raises(ValueError, match="positive"):
        scaled_copies(atoms, (0.0,), kind="linear")


def test_best_scale_on_constructed_energies():
    """The scale of the lowest ensemble-mean energy is picked."""
    # (2 models, 3 scales, 2 structures): mean minimum at scale 0.98 and 1.02.
    e = np.array(
        [
            [[-1.0, -2.0], [-1.2, -2.1], [-1.1, -2.3]],
            [[-1.0, -2.0], [-1.3, -2.2], [-1.1, -2.3]],
        ]
    )
    np.testing.assert_array_equal(best_scale(e, (0.98, 1.0, 1.02)), [1.0, 1.02])


@pytest.mark.slow
@pytest.mark.parametrize("graphs", ["vesin", "matscipy", "torch"])
def test_assembled_batches_equal_maces_pipeline(tiny_models, candidates, graphs):
    """Batches assembled directly (issue 11) give MACE's own pipeline's energies."""
    from ase.build import bulk

    from flywheel.makers.filter.core import predict_energies

    small = bulk("Cu", "fcc", a=3.6)  # a 1-atom cell: every neighbour is an image
    skewed = bulk("Al", "fcc", a=4.05, cubic=True)
    skewed.set_cell(skewed.cell.array + [[0, 0, 0], [2.0, 0, 0], [1.0, 1.5, 0]],
                    scale_atoms=True)
    structures = [*candidates, small, skewed]
    ref = predict_energies(tiny_models, structures, graphs="mace", batch_size=3)
    new = predict_energies(tiny_models, structures, graphs=graphs, batch_size=3)
    np.testing.assert_allclose(new, ref, rtol=0, atol=1e-5)
    one = predict_energies(tiny_models, structures, graphs=graphs, max_edges=1)
    np.testing.assert_allclose(one, ref, rtol=0, atol=1e-5)


class _RunsOutOfMemory(torch.nn.Module):
    """A model that raises the card's out-of-memory error above ``limit`` edges:
    the narrowest stand-in for a GPU that no CI machine has."""

    def __init__(self, model, limit: int):
        super().__init__()
        self.model = model
        self.limit = limit
        self.r_max = model.r_max
        self.atomic_numbers = model.atomic_numbers
        self.heads = getattr(model, "heads", None)
        self.calls: list[int] = []

    def forward(self, batch, **kwargs):
        edges = int(batch["edge_index"].shape[1])
        self.calls.append(edges)
        if edges > self.limit:
            raise torch.OutOfMemoryError(f"stand-in: {edges} edges > {self.limit}")
        return self.model(batch, **kwargs)


@pytest.mark.slow
def test_out_of_memory_batch_is_split_and_retried(tiny_models, candidates, caplog):
    """A batch that does not fit is halved until it does; later batches are split
    before they are tried; the energies are those of one big batch; a structure that
    alone does not fit is a clear error."""
    from flywheel.makers.filter.core import predict_energies, split_batch
    from flywheel.makers.filter.graphs import build_batch

    structures = candidates * 4  # 24 structures of 4 atoms
    ref = predict_energies(tiny_models, structures, batch_size=24, max_edges=None)
    one = build_batch(structures[:1], float(tiny_models[0].r_max),
                      [int(z) for z in tiny_models[0].atomic_numbers])
    per_structure = int(one["edge_index"].shape[1])
    tight = _RunsOutOfMemory(tiny_models[0], limit=5 * per_structure)
    with caplog.at_level("WARNING"):
        got = predict_energies([tight], structures, batch_size=12, max_edges=None)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-5)
    assert "out of memory at 12 structures" in caplog.text
    # 12 -> 6 (fails) -> 3 + 3; the second batch of 12 is split before trying.
    assert max(tight.calls) > 5 * per_structure
    assert sum(c > 5 * per_structure for c in tight.calls) == 2
    # split_batch keeps every graph whole.
    full = build_batch(structures[:5], float(tiny_models[0].r_max),
                       [int(z) for z in tiny_models[0].atomic_numbers])
    a, b = split_batch(full, 2)
    assert a["edge_index"].shape[1] + b["edge_index"].shape[1] == full["edge_index"].shape[1]
    assert int(b["edge_index"].min()) == 0 and len(b["ptr"]) == 4
    with pytest.raises(RuntimeError, match="one structure of 4 atoms .* does not fit"):
        predict_energies([_RunsOutOfMemory(tiny_models[0], limit=1)], structures[:2])


@pytest.mark.slow
def test_cuequivariance_models_give_the_same_energies(tiny_models, candidates):
    """filter.cueq: MACE's converter to cuEquivariance kernels (here their torch
    fallback; the CUDA ops need a GPU) keeps every energy."""
    pytest.importorskip("cuequivariance_torch")
    from flywheel.makers.filter.core import predict_energies, to_cueq

    dtype = torch.get_default_dtype()
    converted = [to_cueq(m) for m in tiny_models]
    assert torch.get_default_dtype() == dtype
    assert type(converted[0].products[0].symmetric_contractions).__module__.startswith(
        "cuequivariance_torch")
    np.testing.assert_allclose(predict_energies(converted, candidates),
                               predict_energies(tiny_models, candidates),
                               rtol=0, atol=1e-5)


def test_tta_with_unit_scale_equals_predict_energies(tiny_models, candidates):
    """One unit scale reproduces the plain batched prediction."""
    from flywheel.makers.filter.core import predict_energies

    plain = predict_energies(tiny_models, candidates)
    tta = predict_with_tta(tiny_models, candidates, scales=(1.0,))
    assert tta.shape == plain.shape == (2, len(candidates))
    np.testing.assert_allclose(tta, plain, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_tta_min_below_mean_and_batching_invariance(tiny_models, candidates):
    """TTA min <= mean over scalings; batching does not change energies."""
    import torch

    from flywheel.makers.filter.core import predict_energies

    dtype = torch.get_default_dtype()
    scales = (0.96, 0.98, 1.0, 1.02, 1.04)
    every = predict_with_tta(tiny_models, candidates, scales=scales, aggregate="none")
    assert torch.get_default_dtype() == dtype
    assert every.shape == (2, 5, len(candidates))
    low = predict_with_tta(tiny_models, candidates, scales=scales, aggregate="min")
    avg = predict_with_tta(tiny_models, candidates, scales=scales, aggregate="mean")
    np.testing.assert_allclose(low, every.min(axis=1), atol=1e-12)
    np.testing.assert_allclose(avg, every.mean(axis=1), atol=1e-12)
    assert np.all(low <= avg + 1e-12)
    assert np.any(low < avg - 1e-6)  # the scalings really change the energy
    # Unit scale column equals the plain prediction of the same structures.
    np.testing.assert_allclose(
        every[:, 2], predict_energies(tiny_models, candidates), atol=1e-6
    )
    # Edge-budgeted batches change only the summation order.
    one_by_one = predict_energies(tiny_models, candidates, max_edges=1)
    unlimited = predict_energies(tiny_models, candidates, max_edges=None, batch_size=64)
    np.testing.assert_allclose(one_by_one, unlimited, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- #
# Calibration maths
# --------------------------------------------------------------------------- #
def test_calibration_report_on_constructed_case():
    """Coverage, errors and z-scores on four hand-made points."""
    mean = np.zeros(4)
    std = np.ones(4)
    oracle = np.array([0.5, -1.5, 2.5, 0.0])  # |z| = 0.5, 1.5, 2.5, 0
    r = calibration_report(mean, std, oracle, levels=(0.68, 0.95), threshold=0.0)
    assert r["n"] == 4
    assert r["coverage_68"] == 0.5  # |z| <= 0.994: 0.5 and 0
    assert r["coverage_95"] == 0.75  # |z| <= 1.960: also 1.5
    assert r["mae"] == pytest.approx(1.125)
    assert r["rmse"] == pytest.approx(math.sqrt(8.75 / 4))
    assert r["bias"] == pytest.approx(-0.375)
    assert r["mean_abs_z"] == pytest.approx(1.125)
    assert r["std_scale"] == pytest.approx(1.0 / 0.6744897501960817)
    # Every prediction is 0 <= threshold: all four called stable, two are.
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 2, 0, 0)
    assert r["daf"] == pytest.approx(1.0)


def test_calibrated_gaussian_gives_nominal_coverage():
    """A calibrated Gaussian spread gives nominal coverage; a halved one does not."""
    rng = np.random.default_rng(0)
    std = rng.uniform(0.01, 0.1, 200_000)
    oracle = rng.normal(0.0, std)
    r = calibration_report(np.zeros_like(std), std, oracle, min_std=0.0)
    assert r["coverage_68"] == pytest.approx(0.68, abs=0.005)
    assert r["coverage_95"] == pytest.approx(0.95, abs=0.005)
    assert r["mean_abs_z"] == pytest.approx(CALIBRATED_MEAN_ABS_Z, abs=0.005)
    assert r["std_scale"] == pytest.approx(1.0, abs=0.01)
    # Halving the spread is overconfidence: coverage falls, std_scale -> 2.
    r2 = calibration_report(np.zeros_like(std), std / 2, oracle, min_std=0.0)
    assert r2["coverage_68"] == pytest.approx(0.383, abs=0.005)
    assert r2["std_scale"] == pytest.approx(2.0, abs=0.02)


def test_classification_metrics_on_constructed_case():
    """Precision, recall, F1 and DAF on six hand-made calls."""
    predicted = np.array([-0.1, 0.05, -0.2, 0.3, -0.05, 0.2])
    oracle = np.array([-0.02, -0.01, 0.1, 0.2, 0.0, 0.1])
    m = classification_metrics(predicted, oracle, threshold=0.0)
    # calls: 0, 2, 4; stable: 0, 1, 4 (0.0 counts as stable)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["base_rate"] == pytest.approx(0.5)
    assert m["daf"] == pytest.approx(4 / 3)
    # Nothing called stable: precision, F1 and DAF are undefined.
    none = classification_metrics(predicted + 1.0, oracle, threshold=0.0)
    assert none["tp"] + none["fp"] == 0
    assert math.isnan(none["f1"])
    assert math.isnan(none["precision"])
    assert math.isnan(none["daf"])
    assert none["recall"] == 0.0


# --------------------------------------------------------------------------- #
# Budget split
# --------------------------------------------------------------------------- #
HITS = {"ais": (9, 18), "new": (0, 0), "sub": (1, 8)}  # rates 0.5, 0.5, 0.2


def test_budget_split_is_proportional_to_smoothed_hit_rate():
    """Quotas follow the Beta-smoothed hit rates and the guaranteed share."""
    assert generator_budget_split(HITS, 120, min_share=0.0) == {
        "ais": 50,
        "new": 50,
        "sub": 20,
    }
    # A guaranteed quarter lifts "sub"; the others share the rest equally.
    assert generator_budget_split(HITS, 120, min_share=0.25) == {
        "ais": 45,
        "new": 45,
        "sub": 30,
    }
    # A stronger prior pulls the rates together: (9+10)/(18+20)=0.5,
    # 10/20=0.5, 11/28=0.393 -> 120 * 0.393/1.393 = 33.8.
    assert generator_budget_split(HITS, 120, prior=(10, 10), min_share=0.0) == {
        "ais": 43,
        "new": 43,
        "sub": 34,
    }


def test_budget_split_caps_and_largest_remainder():
    """Caps by available candidates; integer rounding by largest remainder."""
    # "ais" offers only 10; "new" and "sub" share 110 as 0.5 : 0.2
    # = 78.57 : 31.43 -> 79 : 31 by largest remainder.
    split = generator_budget_split(
        HITS, 120, min_share=0.0, available={"ais": 10, "new": 500, "sub": 500}
    )
    assert split == {"ais": 10, "new": 79, "sub": 31}
    # Equal rates, 10 over 3: the remainder goes to the first name.
    equal = {"a": (1, 2), "b": (1, 2), "c": (1, 2)}
    assert generator_budget_split(equal, 10, min_share=0.0) == {"a": 4, "b": 3, "c": 3}
    # No candidates: quota 0; less on offer than the budget: everything.
    split = generator_budget_split(HITS, 100, available={"ais": 0, "new": 5, "sub": 7})
    assert split == {"ais": 0, "new": 5, "sub": 7}


def test_budget_split_invariants_on_random_cases():
    """Sum, caps and guarantees hold on random cases."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 6))
        names = [f"g{i}" for i in range(n)]
        hits = {}
        for name in names:
            evaluated = int(rng.integers(0, 200))
            hits[name] = (int(rng.integers(0, evaluated + 1)), evaluated)
        available = {name: int(rng.integers(0, 80)) for name in names}
        budget = int(rng.integers(0, 150))
        min_share = float(rng.uniform(0, 0.4))
        split = generator_budget_split(
            hits, budget, min_share=min_share, available=available
        )
        active = [g for g in names if available[g] > 0]
        assert sum(split.values()) == min(budget, sum(available.values()))
        guarantee = min(math.ceil(min_share * budget), budget // max(1, len(active)))
        for g in names:
            assert 0 <= split[g] <= available[g]
            if available[g] > 0:
                assert split[g] >= min(guarantee, available[g])


# --------------------------------------------------------------------------- #
# Composition model
# --------------------------------------------------------------------------- #
ELEMENTS = (
    *("Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Al", "Ga", "Sc", "Y", "Ti"),
    *("Zr", "V", "Nb", "Cr", "Mo", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "B"),
    *("Si", "Ge", "Sn", "N", "P", "O", "S", "Se", "F", "Cl", "Br"),
)


def _synthetic(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Compositions with a nonlinear target of element properties (eV/atom)."""
    from pymatgen.core import Composition, Element

    rng = np.random.default_rng(seed)
    chi = {e: Element(e).X for e in ELEMENTS}
    row = {e: Element(e).row for e in ELEMENTS}
    comps, y = [], []
    for _ in range(n):
        k = int(rng.integers(2, 5))
        els = list(rng.choice(ELEMENTS, size=k, replace=False))
        amounts = rng.integers(1, 5, size=k)
        comp = Composition(dict(zip(els, amounts.tolist(), strict=True)))
        w = np.array([comp.get_atomic_fraction(e) for e in els])
        x = np.array([chi[e] for e in els])
        spread = np.sqrt(np.sum(w * (x - np.sum(w * x)) ** 2))
        y.append(-2.0 * np.tanh(1.5 * spread) + 0.1 * np.sum(w * [row[e] for e in els]))
        comps.append(comp.formula.replace(" ", ""))
    return comps, np.array(y)


def test_featurize():
    """Atomic numbers and fractions, padded."""
    z, w = featurize(["Fe2O3", "NaCl", "Li"])
    np.testing.assert_array_equal(z, [[8, 26], [11, 17], [3, 0]])
    np.testing.assert_allclose(w, [[0.6, 0.4], [0.5, 0.5], [1.0, 0.0]], rtol=1e-6)


@pytest.fixture(scope="module")
def synthetic_model():
    """Train a model on 800 synthetic compositions (~8 s)."""
    comps, y = _synthetic(1000, seed=0)
    model, history = train_composition_model(
        comps[:800], y[:800], epochs=40, seed=0, val_fraction=0.1, batch_size=64
    )
    return model, history, comps[800:], y[800:]


def test_composition_model_learns_a_nonlinear_target(synthetic_model):
    """Held-out MAE far below the predict-the-mean baseline."""
    model, history, comps, y = synthetic_model
    pred = predict_compositions(model, comps)
    mae = np.mean(np.abs(pred - y))
    baseline = np.mean(np.abs(y - y.mean()))
    # Measured: baseline 0.437, model 0.011-0.013 eV/atom (seeds 0-2).
    assert baseline > 0.3
    assert mae < 0.1 * baseline, (mae, baseline)
    assert len(history["val_mae"]) == 40
    assert history["best_val_mae"] == min(history["val_mae"])
    assert history["train_mae"][-1] < 0.5 * history["train_mae"][0]


def test_composition_model_is_reproducible_and_saves(synthetic_model, tmp_path):
    """A fixed seed reproduces the model; save/load keeps predictions."""
    comps, y = _synthetic(300, seed=2)
    kwargs = {"epochs": 3, "val_fraction": 0.2, "batch_size": 32}
    a, _ = train_composition_model(comps, y, seed=7, **kwargs)
    b, _ = train_composition_model(comps, y, seed=7, **kwargs)
    c, _ = train_composition_model(comps, y, seed=8, **kwargs)
    pa, pb, pc = (predict_compositions(m, comps) for m in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert np.abs(pa - pc).max() > 1e-4

    model = synthetic_model[0]
    path = save_composition_model(model, tmp_path / "comp.pt")
    back = load_composition_model(path)
    np.testing.assert_array_equal(
        predict_compositions(back, comps), predict_compositions(model, comps)
    )
