"""MLIP pre-relaxation of candidates (makers/filter/prerelax.py) and its filter wiring.

CHGNet runs with the pretrained weights shipped in the chgnet wheel; the MACE tests
use one tiny model trained here on EMT-labelled Cu/Al cells (seconds: it only has to
be a real MACE model, its own energy is what a MACE pre-relaxation lowers).
"""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from flywheel.makers.filter.prerelax import (
    calculator_evaluator,
    chgnet_evaluator,
    load_chgnet,
    prerelax_structures,
    relax_lockstep,
)
from tests.structures import rocksalt
from tests.test_mace_core import make_emt_frames

A_NACL = 5.64  # experimental rocksalt NaCl (Å); CHGNet's own minimum is measured below


def _cubic_a(structure: Structure) -> float:
    """Conventional cubic lattice parameter of a primitive fcc cell (Å)."""
    return float(np.cbrt(4 * structure.volume))


@pytest.fixture(scope="module")
def chgnet_a_eq() -> float:
    """Return CHGNet's equilibrium rocksalt NaCl lattice parameter (Å).

    From an E(a) scan, no optimizer involved: the parabola through 9 energies at
    0.94-1.06 of 5.64 Å.
    """
    model = load_chgnet()
    scales = np.linspace(0.94, 1.06, 9)
    graphs = [model.graph_converter(rocksalt(A_NACL * s)) for s in scales]
    energies = [float(p["e"]) for p in model.predict_graph(graphs, task="e")]
    c = np.polyfit(scales, energies, 2)
    return float(A_NACL * -c[1] / (2 * c[0]))


def test_chgnet_prerelax_moves_strained_cells_to_the_minimum(chgnet_a_eq):
    """Relax expanded and compressed NaCl to CHGNet's E(a) minimum, lower energy."""
    start = [rocksalt(A_NACL * 1.08), rocksalt(A_NACL * 0.94)]
    results = prerelax_structures(start, "chgnet", steps=50, fmax=0.02)
    # Measured: a_eq = 5.713 Å; 6.091 -> 5.686 and 5.302 -> 5.699 Å in 18 and 17
    # FIRE steps, energy changes -0.058 and -0.097 eV/atom.
    assert 5.6 < chgnet_a_eq < 5.8
    for s0, res in zip(start, results, strict=True):
        assert res.ok, res
        assert res.converged, res
        assert res.energy_change < -0.02, res.energy_change
        a0, a1 = _cubic_a(s0), _cubic_a(res.structure)
        assert abs(a1 - chgnet_a_eq) < 0.1 * abs(a0 - chgnet_a_eq), (a0, a1)
        assert res.structure.composition == s0.composition
        assert 1 <= res.steps <= 50
        rec = res.record("chgnet")
        assert rec["model"] == "chgnet"
        assert rec["energy_change"] == res.energy_change
    # The energy change is real: CHGNet on the returned structures agrees.
    model = load_chgnet()
    for s0, res in zip(start, results, strict=True):
        graphs = [model.graph_converter(s) for s in (s0, res.structure)]
        e0, e1 = (float(p["e"]) for p in model.predict_graph(graphs, task="e"))
        assert e1 - e0 == pytest.approx(res.energy_change, abs=1e-4)


def test_batched_chgnet_equals_the_ase_calculator_path():
    """Batched lockstep == the same FIRE runs with CHGNetCalculator, or one by one."""
    import contextlib
    import io

    from chgnet.model.dynamics import CHGNetCalculator

    rng = np.random.default_rng(0)
    cells = [rocksalt(A_NACL * 1.05), rocksalt(5.2, ("Li", "F"))]
    cells[1].make_supercell([2, 1, 1])
    cells[1].perturb(0.1, 0.05)
    cells[0].apply_strain(rng.uniform(-0.03, 0.03, 3).tolist())
    with contextlib.redirect_stdout(io.StringIO()):
        calc = CHGNetCalculator(model=load_chgnet(), use_device="cpu")
    a = relax_lockstep(cells, chgnet_evaluator(), steps=8, fmax=0.01)
    b = relax_lockstep(cells, calculator_evaluator(calc), steps=8, fmax=0.01)
    # one relaxation in flight at a time: the same trajectories
    c = relax_lockstep(cells, chgnet_evaluator(), steps=8, fmax=0.01, max_active=1)
    for ra, rb, rc in zip(a, b, c, strict=True):
        assert rc.energy_final == pytest.approx(ra.energy_final, abs=1e-4)
        assert ra.steps == rb.steps == 8
        # float32 model, different batch composition: round-off only
        assert ra.energy_final == pytest.approx(rb.energy_final, abs=1e-4)
        np.testing.assert_allclose(ra.structure.lattice.matrix,
                                   rb.structure.lattice.matrix, atol=1e-3)


def test_failures_keep_the_original_and_give_a_reason():
    """Fail an isolated atom (graph error) and a volume beyond the limit alone.

    The other structure of the same batch still relaxes.
    """
    isolated = Structure(Lattice.cubic(26.0), ["Na", "Cl"],
                         [[0, 0, 0], [0.5, 0.5, 0.5]])
    good = rocksalt(A_NACL * 1.08)
    res = prerelax_structures([isolated, good], "chgnet", steps=20, fmax=0.05)
    assert not res[0].ok
    assert "isolated" in res[0].error.lower(), res[0].error
    assert res[0].structure is isolated
    assert res[0].record("chgnet")["error"] == res[0].error
    assert res[1].ok
    assert res[1].energy_change < 0

    disordered = rocksalt()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    res = prerelax_structures([disordered], "chgnet", steps=5)[0]
    assert not res.ok
    assert "disordered" in res.error
    assert res.structure is disordered

    # CHGNet shrinks the expanded cell by ~17 % in volume: a 5 % limit stops it.
    limited = prerelax_structures([good], "chgnet", steps=50, fmax=0.02,
                                  max_volume_ratio=1.05)[0]
    assert not limited.ok
    assert "volume changed by a factor" in limited.error
    assert limited.structure is good
    assert limited.volume_ratio < 1 / 1.05  # measured: 0.927 after one FIRE step


# --------------------------------------------------------------------------- #
# MACE
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def tiny_mace(tmp_path_factory):
    """One 8-channel MACE model, 2 epochs on 24 EMT Cu/Al frames (~6 s)."""
    from flywheel.makers.train.core import MaceTrainSettings, train_ensemble

    settings = MaceTrainSettings(max_num_epochs=2, num_channels=8)
    (path,) = train_ensemble(make_emt_frames(24, seed=1),
                             tmp_path_factory.mktemp("tiny_mace"), n_models=1,
                             settings=settings)
    return path


def _strained_cual(n: int, seed: int) -> list:
    """Return expanded, rattled Cu/Al cells as pymatgen Structures (no labels)."""
    rng = np.random.default_rng(seed)
    out = []
    for atoms in make_emt_frames(n, seed=seed):
        atoms.calc = None
        atoms = atoms.repeat((2, 1, 1))
        atoms.set_cell(atoms.cell[:] * 1.06, scale_atoms=True)
        atoms.rattle(0.15, seed=int(rng.integers(1 << 30)))
        out.append(Structure(Lattice(atoms.cell[:]), atoms.get_chemical_symbols(),
                             atoms.positions, coords_are_cartesian=True))
    return out


def test_mace_prerelax_lowers_its_energy_and_equals_mace_calculator(tiny_mace):
    """Batched MACE lockstep == FIRE driven by mace's MACECalculator; energy drops."""
    from mace.calculators import MACECalculator

    from flywheel.makers.filter.core import load_models, predict_energies

    cells = _strained_cual(3, seed=7)
    batched = prerelax_structures(cells, "mace", mace_model=tiny_mace, steps=15,
                                  fmax=0.01)
    calc = MACECalculator(model_paths=str(tiny_mace), device="cpu", default_dtype="")
    reference = relax_lockstep(cells, calculator_evaluator(calc), steps=15, fmax=0.01)
    model = load_models([tiny_mace])
    e_before = predict_energies(model, cells)[0]
    e_after = predict_energies(model, [r.structure for r in batched])[0]
    for i, (b, r) in enumerate(zip(batched, reference, strict=True)):
        assert b.ok
        assert r.ok
        assert b.steps == r.steps > 0
        assert b.energy_final == pytest.approx(r.energy_final, abs=1e-5)
        np.testing.assert_allclose(b.structure.cart_coords, r.structure.cart_coords,
                                   atol=1e-4)
        assert b.energy_change < 0
        assert e_after[i] - e_before[i] == pytest.approx(b.energy_change, abs=1e-5)


def test_mace_unknown_element_fails_alone(tiny_mace):
    """NaCl is outside a Cu/Al model: that structure fails, the Cu/Al one relaxes."""
    cual = _strained_cual(1, seed=3)[0]
    nacl = rocksalt()
    res = prerelax_structures([nacl, cual], "mace", mace_model=tiny_mace, steps=10)
    assert not res[0].ok
    assert "not trained on" in res[0].error
    assert res[0].structure is nacl
    assert res[1].ok


def test_filter_prerelaxes_once_and_scores_the_relaxed_structures(
    tiny_mace, db_uri, monkeypatch, caplog
):
    """Pre-relax in FilterMaker once; score and store the relaxed structures.

    With prerelax='mace' the relaxed structures are stored (original kept) and
    scored, and not relaxed again when the pool is rescored.
    """
    from flywheel.config import CampaignConfig
    from flywheel.makers.common import campaign_db, structure_fields
    from flywheel.makers.filter import prerelax
    from flywheel.makers.filter.core import load_models, predict_energies
    from flywheel.makers.filter.jobs import FilterMaker

    config = CampaignConfig(
        name="pre", chemistry={"elements": ["Al", "Cu"]},
        database={"uri": db_uri},
        filter={"prerelax": "mace", "prerelax_steps": 20, "prerelax_fmax": 0.01,
                "budget": 2, "max_per_formula": 1, "split_by_generator": False},
    )
    db = campaign_db(config)
    data = tiny_mace.read_bytes()
    for member in (0, 1):
        db.put_file("models", f"m{member}.model", data, round=0, member=member)
    model = load_models([tiny_mace])
    for el in ("Al", "Cu"):  # elemental references for the hull, from the model
        s = Structure(Lattice.cubic(4.05 if el == "Al" else 3.61), [el] * 4,
                      [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        e = float(predict_energies(model, [s])[0, 0])
        db.materials.insert_one(db.q(material_id=f"ref-{el}", formula=el,
                                     energy_per_atom=e, round=0, stable=True,
                                     generator="seed"))
    cells = _strained_cual(6, seed=11)
    for i, s in enumerate(cells):
        db.candidates.insert_one(db.q(
            candidate_id=f"r1-rss-{i:06d}", round=1, generator="rss",
            structure=s.as_dict(), status="generated", **structure_fields(s)))

    calls: list[int] = []
    real = prerelax.prerelax_structures

    def spy(structures, *args, **kwargs):
        calls.append(len(structures))
        return real(structures, *args, **kwargs)

    monkeypatch.setattr(prerelax, "prerelax_structures", spy)
    maker = FilterMaker()
    with caplog.at_level("WARNING"):
        out = maker.make.original(maker, config, 1)
    assert "one at a time" not in caplog.text  # the batches ran as batches
    assert out.scored == 6
    assert calls == [6]
    assert (out.prerelaxed, out.prerelax_failed) == (6, 0)
    docs = {d["candidate_id"]: d for d in db.candidates.find(db.q())}
    relaxed = []
    for i, s in enumerate(cells):
        doc = docs[f"r1-rss-{i:06d}"]
        rec = doc["prerelaxed"]
        assert rec["model"] == "mace"
        assert rec["model_round"] == 0
        assert rec["energy_change"] < 0
        assert 1 <= rec["steps"] <= 20
        assert Structure.from_dict(doc["structure_unrelaxed"]) == s
        new = Structure.from_dict(doc["structure"])
        assert new.composition == s.composition
        assert np.abs(new.cart_coords - s.cart_coords).max() > 1e-3
        relaxed.append(new)
        # the ensemble scored the relaxed structure
        e = float(predict_energies(model, [new])[0, 0])
        assert doc["prediction"]["energy_per_atom"] == pytest.approx(e, abs=1e-5)
    assert sorted(out.selected_ids) == sorted(
        d["candidate_id"] for d in docs.values() if d["status"] == "selected")

    # Round 2 rescoring: the 4 unselected candidates are not relaxed again.
    db.put_file("models", "m0.model", data, round=1, member=0)
    db.put_file("models", "m1.model", data, round=1, member=1)
    out2 = maker.make.original(maker, config, 2)
    assert out2.scored == 4
    assert calls == [6]
    assert out2.prerelaxed == 0
    for doc in db.candidates.find(db.q(status="generated")):
        before = docs[doc["candidate_id"]]
        assert doc["prerelaxed"] == before["prerelaxed"]
        assert doc["structure"] == before["structure"]


def test_prerelax_never_rewrites_a_candidate_already_selected(tiny_mace, db_uri):
    """A shard rerun after selection must not change what the oracle relaxes."""
    from flywheel.config import CampaignConfig
    from flywheel.makers.common import campaign_db, structure_fields
    from flywheel.makers.filter.core import load_models
    from flywheel.makers.filter.jobs import prerelax_pool

    config = CampaignConfig(
        name="pre-guard", chemistry={"elements": ["Al", "Cu"]},
        database={"uri": db_uri},
        filter={"prerelax": "mace", "prerelax_steps": 5, "prerelax_fmax": 0.01})
    db = campaign_db(config)
    cells = _strained_cual(2, seed=3)
    ids = [f"r1-rss-{i:06d}" for i in range(2)]
    for cid, s, status in zip(ids, cells, ("generated", "selected"), strict=True):
        db.candidates.insert_one(db.q(candidate_id=cid, round=1, generator="rss",
                                      structure=s.as_dict(), status=status,
                                      **structure_fields(s)))
    prerelax_pool(db, ids, list(cells), [s.as_dict() for s in cells], [True, True],
                  config.filter, mace_model=load_models([tiny_mace])[0], model_round=0)
    docs = {d["candidate_id"]: d for d in db.candidates.find(db.q())}
    assert docs[ids[0]]["prerelaxed"]["model"] == "mace"
    assert "prerelaxed" not in docs[ids[1]]
    assert Structure.from_dict(docs[ids[1]]["structure"]) == cells[1]
