"""Sharded screening of a 10^4-candidate pool (issue 11): shards through jobflow on
the real local server, idempotent reruns, a lost shard recovered by the filter."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

N_POOL = 10_000
N_SHARDS = 4


def _cells(n: int, seed: int) -> list:
    """Random Cu/Al occupations of strained, rattled 4-atom fcc cells."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
        atoms.symbols[rng.random(len(atoms)) < 0.5] = "Al"
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))),
                       scale_atoms=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Two 8-channel MACE members trained 2 epochs on 24 EMT Cu-Al frames."""
    from ase.calculators.emt import EMT

    from flywheel.makers.train.core import MaceTrainSettings, train_ensemble

    frames = _cells(24, seed=0)
    for a in frames:
        a.calc = EMT()
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
    settings = MaceTrainSettings(max_num_epochs=2, num_channels=8, stress_weight=0.0)
    return train_ensemble(frames, tmp_path_factory.mktemp("m"), n_models=2,
                          settings=settings)


@pytest.fixture
def campaign(db_uri, model_files):
    """A campaign at the start of round 1: elemental Cu and Al on the hull, a model
    of round 0 in GridFS, 10^4 generated candidates (10 of them unscorable)."""
    return _campaign(db_uri, model_files, N_POOL, N_POOL // N_SHARDS)


def _campaign(db_uri, model_files, n_pool, shard_size):
    from monty.json import jsanitize
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymongo import InsertOne

    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB

    config = CampaignConfig(
        name="screening", chemistry={"elements": ["Cu", "Al"]},
        filter={"ensemble_size": 2, "budget": 20, "max_per_formula": 20,
                "shard_size": shard_size},
        database={"uri": db_uri})
    db = CampaignDB(db_uri, config.name)
    db.ensure_indexes()
    db.materials.insert_many([
        {"campaign": config.name, "material_id": m, "formula": f, "chemsys": f,
         "energy_per_atom": e, "round": 0, "generator": "seed", "stable": True}
        for m, f, e in (("m-cu", "Cu", 0.0), ("m-al", "Al", 0.0))])
    for i, path in enumerate(model_files):
        db.put_file("models", path.name, path.read_bytes(), round=0, member=i)
    base = [AseAtomsAdaptor.get_structure(a) for a in _cells(500, seed=1)]
    ops = []
    for k in range(n_pool):
        s = base[k % len(base)].copy()
        s.perturb(0.01 * (k // len(base)) + 0.001)
        if k < 10:
            s.replace(0, "Ni")  # an element the model does not know
        ops.append(InsertOne({
            "campaign": config.name, "candidate_id": f"c{k:05d}", "round": 1,
            "status": "generated", "generator": "test",
            "formula": s.composition.reduced_formula, "chemsys": "Al-Cu",
            "structure": jsanitize(s.as_dict())}))
    db.bulk_write("candidates", ops, batch=2000)
    return config, db


def _run(jobs):
    from jobflow import Flow, JobStore, run_locally
    from maggma.stores import MemoryStore

    responses = run_locally(Flow(jobs), store=JobStore(MemoryStore()),
                            log=False, ensure_success=True)
    return {uuid: r[1].output for uuid, r in responses.items()}


@pytest.mark.slow
def test_sharded_screening_of_ten_thousand(campaign):
    from flywheel.makers.filter.core import load_models, predict_energies
    from flywheel.makers.filter.jobs import FilterMaker, ScreenShardMaker

    config, db = campaign
    shards = [ScreenShardMaker().make(config, 1, k, N_SHARDS) for k in range(N_SHARDS)]
    out = _run(shards)
    counts = [out[j.uuid] for j in shards]
    assert sum(c["written"] for c in counts) == N_POOL - 10
    assert sum(c["unscorable"] for c in counts) == 10
    assert db.candidates.count_documents(
        {"prediction.model_round": 0, "prediction.members": {"$size": 2}}) == N_POOL - 10
    rate = N_POOL / sum(c["seconds"] for c in counts)
    print(f"\nscreened {N_POOL} candidates at {rate:.0f} structures/s (CPU)")

    # the stored predictions are the model's
    from pymatgen.core import Structure

    from flywheel.makers.filter.jobs import current_hull

    docs = list(db.candidates.find({"candidate_id": {"$in": ["c00100", "c05555",
                                                              "c09999"]}}))
    with tempfile.TemporaryDirectory() as tmp:
        models = load_models(db.fetch_models(0, Path(tmp)))
    direct = predict_energies(models, [Structure.from_dict(d["structure"])
                                       for d in docs])
    stored = np.array([d["prediction"]["members"] for d in docs]).T
    np.testing.assert_allclose(stored, direct, atol=1e-6)
    hull = current_hull(db, config)
    for d in docs:
        comp = Structure.from_dict(d["structure"]).composition
        assert d["prediction"]["hull_energy"] == pytest.approx(hull.hull_energy(comp))

    # a rerun of a shard writes nothing
    before = {d["candidate_id"]: d["prediction"] for d in db.candidates.find(
        {"prediction": {"$exists": True}}, {"candidate_id": 1, "prediction": 1})}
    again = ScreenShardMaker().make(config, 1, 1, N_SHARDS)
    res = _run([again])[again.uuid]
    assert res["written"] == 0 and res["skipped"] == N_POOL // N_SHARDS
    after = {d["candidate_id"]: d["prediction"] for d in db.candidates.find(
        {"prediction": {"$exists": True}}, {"candidate_id": 1, "prediction": 1})}
    assert after == before

    # a lost shard: the filter scores its candidates itself and selects from all
    lost = [f"c{k:05d}" for k in range(2 * N_POOL // 4, 3 * N_POOL // 4)]
    db.candidates.update_many(db.q(candidate_id={"$in": lost}),
                              {"$unset": {"prediction": ""}})
    filt = FilterMaker().make(config, 1)
    result = _run([filt])[filt.uuid]
    assert result.scored == N_POOL - 10
    assert result.unscorable == 10
    assert len(result.selected_ids) == 20
    assert db.candidates.count_documents({"status": "selected"}) == 20
    assert db.candidates.count_documents(
        {"prediction.acquisition": {"$exists": True}}) == N_POOL - 10


def test_round_flow_adds_the_screening_jobs(db_uri, model_files):
    """The round's screen plan job adds ceil(pool / shard_size) screening jobs before
    the filter (a jobflow detour), and the filter selects from their results."""
    from flywheel.makers.filter.jobs import FilterMaker
    from flywheel.workflows.round import screen_pool

    config, db = _campaign(db_uri, model_files, 300, 100)
    plan = screen_pool(config, 1)
    filt = FilterMaker().make(config, 1, plan.output)
    out = _run([plan, filt])
    assert out[plan.uuid] == {"pool": 300, "shards": 3}
    screens = [o for o in out.values() if isinstance(o, dict) and "written" in o]
    assert sorted(o["shard"] for o in screens) == [0, 1, 2]
    assert sum(o["written"] for o in screens) == 290
    assert out[filt.uuid].scored == 290 and len(out[filt.uuid].selected_ids) == 20
