"""The VASP oracle end to end: atomate2's MP flow, custodian, emmet parsing, MP2020 and
the hull, with ``tests/vasp_standin.py`` in place of the ``vasp_std`` executable.

Everything but the executable is the production code path: atomate2 writes the MP input
sets (POTCAR.spec instead of POTCAR, as atomate2's own tests do), custodian runs the
command with atomate2's default handlers and validators, atomate2 copies outputs between
the two relaxations, emmet parses vasprun.xml/OUTCAR/CONTCAR, and flywheel applies MP2020
and stores the result through the relax job.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from flywheel.config import campaign_from_dict

STANDIN = Path(__file__).with_name("vasp_standin.py")
# MP2020 adjustments (pymatgen MP2020Compatibility.yaml): oxide anion, Fe U value.
MP2020_OXIDE = -0.687
MP2020_FE_U = -2.256


def rocksalt(a: float, cation: str = "Fe", anion: str = "O"):
    from pymatgen.core import Lattice, Structure

    conv = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(a), [cation, anion], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    return conv.get_primitive_structure()


@pytest.fixture(scope="module")
def vasp_on_path(tmp_path_factory):
    """``vasp_std`` on PATH runs the stand-in; a log file counts its runs."""
    bindir = tmp_path_factory.mktemp("bin")
    exe = bindir / "vasp_std"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    exe.chmod(0o755)
    log = bindir / "runs.log"
    old = {k: os.environ.get(k) for k in ("PATH", "FLYWHEEL_STANDIN_LOG")}
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    os.environ["FLYWHEEL_STANDIN_LOG"] = str(log)
    try:
        yield log
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def vasp_config(uri: str, run_dir: Path, **vasp):
    return campaign_from_dict(
        {
            "name": f"vasp{uuid.uuid4().hex[:6]}",
            "chemistry": {
                "elements": ["Li", "Fe", "O"],
                "max_elements": 3,
                "max_sites": 8,
            },
            "oracle": {
                "backend": "vasp",
                "chunk_size": 1,
                "max_frames": 6,
                "vasp": {"potcar_spec": True, "run_dir": str(run_dir), **vasp},
            },
            "database": {"uri": uri},
        }
    )


@pytest.fixture(scope="module")
def relaxed_feo(vasp_on_path, local_server, tmp_path_factory):
    """FeO (rock salt, strained) relaxed by the relax job with the VASP oracle."""
    from flywheel.makers.common import campaign_db
    from flywheel.makers.generate.admit import admit_candidates
    from flywheel.makers.generate.core import Candidate
    from flywheel.makers.relax.jobs import RelaxMaker

    run_dir = tmp_path_factory.mktemp("vasp_runs")
    config = vasp_config(f"{local_server.uri}/v{uuid.uuid4().hex[:8]}", run_dir)
    db = campaign_db(config)
    start = rocksalt(4.45)
    admit_candidates(
        db,
        1,
        [
            Candidate(
                start,
                generator="prototype",
                parent_id=None,
                substitution=None,
                source="test",
            )
        ],
        max_sites=8,
        status="selected",
    )
    cid = db.candidates.find_one(db.q())["candidate_id"]
    maker = RelaxMaker()
    out = maker.make.original(maker, config, 1, [cid])
    return {
        "config": config,
        "db": db,
        "cid": cid,
        "out": out,
        "start": start,
        "log": vasp_on_path,
        "run_dir": run_dir,
    }


def test_vasp_relaxation_through_atomate2_and_custodian(relaxed_feo):
    out, db, cid = relaxed_feo["out"], relaxed_feo["db"], relaxed_feo["cid"]
    assert out.failed == {}
    assert out.evaluated == [cid]
    doc = db.materials.find_one(db.q(material_id=cid))
    details = doc["oracle_details"]
    # atomate2's MP GGA+U double relaxation and static, each run by custodian.
    assert details["calc_types"] == ["GGA+U Structure Optimization"] * 2 + [
        "GGA+U Static"
    ]
    runs = relaxed_feo["log"].read_text().splitlines()
    assert len(runs) == 3
    assert [r.split()[1] for r in runs] == ["NSW=99", "NSW=99", "NSW=0"]
    calc_dirs = sorted(Path(details["dir_name"]).glob("job_*"))
    assert len(calc_dirs) == 3
    for d in calc_dirs:
        names = {p.name for p in d.iterdir()}
        assert {
            "INCAR.gz",
            "POTCAR.spec",
            "vasprun.xml.gz",
            "custodian.json.gz",
        } <= names
    # The MP input set: GGA+U with U(Fe) = 5.3 eV, spin polarised.
    from pymatgen.io.vasp import Incar

    incar = Incar.from_file(calc_dirs[0] / "INCAR.gz")
    assert incar["LDAU"] is True and incar["LDAUU"] == [5.3, 0]
    assert incar["ISPIN"] == 2 and incar["ENCUT"] == 520


def test_parsed_energy_is_the_executables_energy(relaxed_feo):
    """The stored raw energy is what the 'VASP' run computed for the final structure:
    recomputed here with the same CHGNet weights the stand-in uses.
    """
    from chgnet.model import CHGNet
    from pymatgen.core import Structure

    db, cid = relaxed_feo["db"], relaxed_feo["cid"]
    doc = db.materials.find_one(db.q(material_id=cid))
    final = Structure.from_dict(doc["structure"])
    model = CHGNet.load(model_name="0.3.0", verbose=False)
    e_chgnet = float(model.predict_structure(final)["e"]) * len(final)
    # The stand-in writes CHGNet's energy minus the MP2020 correction (CHGNet learned
    # corrected energies); the oracle adds the correction back, once.
    correction = MP2020_OXIDE + MP2020_FE_U
    assert doc["uncorrected_energy"] == pytest.approx(e_chgnet - correction, abs=2e-3)
    assert doc["energy"] == pytest.approx(e_chgnet, abs=2e-3)
    # The cell relaxed from the strained 4.45 Å start (the stand-in's CHGNet minimum
    # for GGA+U FeO is near 4.3 Å conventional).
    assert final.volume < relaxed_feo["start"].volume - 0.5
    assert doc["converged"] is True
    assert doc["n_steps"] >= 3


def test_mp2020_correction_applied_exactly_once(relaxed_feo):
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from flywheel.makers.relax.vasp import apply_mp2020

    db, cid = relaxed_feo["db"], relaxed_feo["cid"]
    doc = db.materials.find_one(db.q(material_id=cid))
    expected = MP2020_OXIDE + MP2020_FE_U
    assert doc["correction"] == pytest.approx(expected, abs=1e-9)
    assert doc["energy"] == pytest.approx(
        doc["uncorrected_energy"] + expected, abs=1e-9
    )
    assert doc["energy_per_atom"] == pytest.approx(doc["energy"] / 2)
    entry = ComputedStructureEntry.from_dict(doc["oracle_details"]["entry"])
    names = sorted(a.name for a in entry.energy_adjustments)
    assert names == [
        "MP2020 GGA/GGA+U mixing correction (Fe)",
        "MP2020 anion correction (oxide)",
    ]
    # Applying the scheme again (clean=True) leaves the energy where it is.
    again = apply_mp2020(apply_mp2020(entry))
    assert again.energy == pytest.approx(entry.energy, abs=1e-9)
    assert again.correction == pytest.approx(expected, abs=1e-9)


def test_training_frames_carry_corrected_energies(relaxed_feo):
    from ase.io import read

    db, cid = relaxed_feo["db"], relaxed_feo["cid"]
    doc = db.materials.find_one(db.q(material_id=cid))
    files = list(db.find_files("frames", candidate_id=cid))
    assert len(files) == 1
    import io

    frames = read(
        io.StringIO(db.get_file("frames", files[0]["_id"]).decode()),
        index=":",
        format="extxyz",
    )
    assert 2 <= len(frames) <= 6
    last = frames[-1]
    # The last frame is the static: its label is the stored (corrected) energy.
    assert last.info["REF_energy"] == pytest.approx(doc["energy"], abs=1e-6)
    assert last.arrays["REF_forces"].shape == (2, 3)
    assert last.info["REF_stress"].shape in {(6,), (3, 3)}


def test_hull_entry_against_mp_references(relaxed_feo, shared_data):
    """The corrected entry is placed on the Materials Project Li-Fe-O hull (MP2020
    corrected GGA/GGA+U energies): a compatible hull, as a VASP campaign builds it.
    """
    from monty.serialization import loadfn
    from pymatgen.analysis.phase_diagram import PhaseDiagram
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from flywheel.makers.hull.engine import HullEngine

    db, cid = relaxed_feo["db"], relaxed_feo["cid"]
    doc = db.materials.find_one(db.q(material_id=cid))
    entry = ComputedStructureEntry.from_dict(doc["oracle_details"]["entry"])
    mp = [
        e
        for e in loadfn(shared_data / "mp_Li-Fe-O_entries.json.gz")
        if set(e.composition.chemical_system.split("-")) <= {"Fe", "O"}
    ]
    pd = PhaseDiagram([*mp, entry])
    ref = pd.get_e_above_hull(entry)
    engine = HullEngine(
        [(e.entry_id, e.composition.formula, e.energy_per_atom) for e in mp]
        + [(cid, doc["formula"], doc["energy_per_atom"])]
    )
    rec = engine.results[cid]
    assert rec.e_above_hull == pytest.approx(ref, abs=1e-6)
    print(f"FeO vs MP hull: e_above_hull={ref:.6f}")
    # Recorded from this test's run: the stand-in's corrected FeO (= CHGNet's energy)
    # sits 0.085 eV/atom above MP's Fe-O hull, the size of CHGNet's errors on oxides.
    assert ref == pytest.approx(0.0852, abs=5e-3)
    assert not rec.stable


def test_custodian_corrects_a_failed_run(vasp_on_path, tmp_path, monkeypatch):
    """A ZBRENT error on the first run: custodian's VaspErrorHandler fixes the INCAR and
    reruns, and the correction is recorded with the result.
    """
    from flywheel.makers.relax import run

    monkeypatch.setenv("FLYWHEEL_STANDIN_FAIL", "ZBRENT")
    config = vasp_config("mongodb://127.0.0.1:1/none", tmp_path / "runs")
    from pymatgen.core import Lattice, Structure

    li = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    [result] = run.run_oracle([li], config.oracle)
    assert result.ok, result.error
    errors = [e for errs in result.details["custodian_corrections"] for e in errs]
    assert "zbrent" in errors
    assert result.details["correction"] == 0.0  # Li metal: no MP2020 adjustment
    assert result.details["calc_types"][-1] == "GGA Static"


def test_failed_vasp_is_a_result_not_an_exception(tmp_path):
    from flywheel.makers.relax import run

    config = vasp_config(
        "mongodb://127.0.0.1:1/none",
        tmp_path / "runs",
        vasp_cmd=str(tmp_path / "no_such_vasp"),
        max_errors=0,
    )
    [result] = run.run_oracle([rocksalt(4.3, "Li", "F")], config.oracle)
    assert not result.ok
    assert result.error
    assert Path(result.details["dir_name"]).is_dir()


def test_unknown_handler_is_a_clear_error(tmp_path):
    from flywheel.makers.relax.vasp import custodian_handlers

    with pytest.raises(ValueError, match="NoSuchHandler"):
        custodian_handlers(["VaspErrorHandler", "NoSuchHandler"])
