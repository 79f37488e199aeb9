"""`flywheel export`: the GNoME release layout (read back by flywheel's own loader), and
CIF / extended XYZ / JSON files of any query.

The campaign is the one of tests/test_novelty.py's VASP case: MP's Li-Fe-O entries
(examples/references, CC-BY 4.0) join the hull with their own MP2020 energies, plus two
results on it: a copy of MP's LiFeO2 ground state 0.3 eV/atom below it (known) and
zincblende FeO 20 meV/atom below MP's FeO (new).
"""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import pytest
import yaml

MP_FILE = (Path(__file__).resolve().parents[1] / "examples" / "references"
           / "mp_Li-Fe-O_entries.json.gz")


@pytest.fixture
def campaign(tmp_path, db_uri):
    from monty.serialization import loadfn
    from pymatgen.core import Lattice, Structure

    from flywheel.config import load_campaign
    from flywheel.makers.common import campaign_db
    from flywheel.makers.hull.jobs import HullMaker
    from flywheel.makers.relax.core import OracleResult
    from flywheel.makers.relax.jobs import store_result
    from flywheel.makers.seeds.references import store_references

    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"exp{uuid.uuid4().hex[:6]}",
        "chemistry": {"elements": ["Li", "Fe", "O"], "max_sites": 16},
        "hull": {"references": [str(MP_FILE)]},
        "oracle": {"backend": "vasp"},
        "database": {"uri": db_uri},
    }))
    config = load_campaign(path)
    db = campaign_db(config)
    store_references(db, config)

    def store(mid, structure, e_pa, generator):
        cand = {"candidate_id": mid, "generator": generator, "selected_by": "filter"}
        store_result(db, cand, OracleResult(structure, energy=e_pa * len(structure),
                                            converged=True), 1, "vasp")

    ground = db.references.find_one(db.q(entry_id="mp-757614"))
    lifeo2 = next(e for e in loadfn(MP_FILE) if e.entry_id == "mp-757614").structure
    store("r1-sub-00000", lifeo2, ground["energy_per_atom"] - 0.3, "substitution")
    feo = min(d["energy_per_atom"] for d in db.references.find(db.q(formula="FeO")))
    zb = Structure.from_spacegroup("F-43m", Lattice.cubic(4.6), ["Fe", "O"],
                                   [[0, 0, 0], [0.25, 0.25, 0.25]])
    store("r1-pro-00000", zb, feo - 0.02, "prototype")
    maker = HullMaker()
    maker.make.original(maker, config, 1)
    return path, config, db


def test_gnome_layout_columns_values_and_round_trip(campaign, tmp_path):
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.core import Composition

    from flywheel.makers.hull.export import GNOME_COLUMNS, export_gnome
    from flywheel.makers.seeds.sources import load_entries

    _, config, db = campaign
    out = export_gnome(db, config, tmp_path / "gnome")
    assert out["n_materials"] == 2
    summary = tmp_path / "gnome" / "stable_materials_summary.csv"
    with summary.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == GNOME_COLUMNS
        rows = {r["MaterialId"]: r for r in reader}
    assert GNOME_COLUMNS[:3] == ("Composition", "MaterialId", "Reduced Formula")
    assert len(GNOME_COLUMNS) == 21 and GNOME_COLUMNS[-1] == (
        "Decomposition Energy Per Atom MP OQMD")

    feo = rows["r1-pro-00000"]
    assert (feo["Composition"], feo["Reduced Formula"], feo["Elements"]) == (
        "Fe4O4", "FeO", "['Fe', 'O']")
    assert (feo["Space Group"], feo["Space Group Number"], feo["Point Group"],
            feo["Crystal System"]) == ("F-43m", "216", "-43m", "cubic")
    assert float(feo["Volume"]) == pytest.approx(4.6**3)
    assert feo["Dimensionality Cheon"] == "3D" and feo["Bandgap"] == ""
    assert feo["Is Train"] == "True"
    stored = db.materials.find_one(db.q(material_id="r1-pro-00000"))
    assert float(feo["Corrected Energy"]) == pytest.approx(stored["energy"])
    # on the hull of everything; 68 meV/atom below the hull of the other compositions;
    # 20 meV/atom below the known materials' hull (MP's FeO is on it)
    assert float(feo["Decomposition Energy Per Atom All"]) == 0.0
    assert float(feo["Decomposition Energy Per Atom Relative"]) == pytest.approx(
        -0.0684094, abs=1e-6)
    for col in ("Decomposition Energy Per Atom", "Decomposition Energy Per Atom MP",
                "Decomposition Energy Per Atom MP OQMD"):
        assert float(feo[col]) == pytest.approx(-0.02, abs=1e-9)
    assert float(rows["r1-sub-00000"]["Decomposition Energy Per Atom MP"]) == (
        pytest.approx(-0.3, abs=1e-9))
    # GNoME's Composition: the cell, elements in alphabetical order
    lifeo2 = rows["r1-sub-00000"]["Composition"]
    assert Composition(lifeo2).reduced_formula == "LiFeO2"
    assert [e for e in Composition(lifeo2).as_dict()] == ["Fe", "Li", "O"]
    assert lifeo2.startswith("Fe") and lifeo2.index("Li") < lifeo2.index("O")
    # formation energy against the lowest Fe and O entries on the hull (MP's, here)
    mu = {el: min(d["energy_per_atom"] for d in db.references.find(db.q(formula=f)))
          for el, f in (("Fe", "Fe"), ("O", "O2"))}
    assert float(feo["Formation Energy Per Atom"]) == pytest.approx(
        stored["energy_per_atom"] - 0.5 * (mu["Fe"] + mu["O"]), abs=1e-9)

    # flywheel's own GNoME loader reads the folder back: same ids, energies, structures
    report = load_entries(tmp_path / "gnome", compatibility=None)
    assert not report.rejected
    back = {e.entry_id: e for e in report}
    assert set(back) == {"r1-pro-00000", "r1-sub-00000"}
    matcher = StructureMatcher()
    for mid, entry in back.items():
        doc = db.materials.find_one(db.q(material_id=mid))
        assert entry.energy == pytest.approx(doc["energy"], abs=1e-6)
        from pymatgen.core import Structure

        assert matcher.fit(entry.structure, Structure.from_dict(doc["structure"]))

    # the hull file rebuilds the campaign's hull with pymatgen
    with (tmp_path / "gnome" / "stable_materials_hull.csv").open(newline="") as handle:
        hull_rows = list(csv.DictReader(handle))
    assert len(hull_rows) == out["n_hull_entries"] == 375 + 2
    entries = {r["MaterialId"]: PDEntry(Composition(r["Composition"]),
                                        float(r["Corrected Energy"]),
                                        name=r["MaterialId"]) for r in hull_rows}
    pd = PhaseDiagram(list(entries.values()))
    assert pd.get_e_above_hull(entries["r1-pro-00000"]) == pytest.approx(0, abs=1e-9)
    assert pd.get_phase_separation_energy(entries["r1-pro-00000"]) == pytest.approx(
        -0.0684094, abs=1e-6)


def test_gnome_layout_zipped_reads_back(campaign, tmp_path):
    from flywheel.makers.hull.export import export_gnome
    from flywheel.makers.seeds.sources import load_entries

    _, config, db = campaign
    export_gnome(db, config, tmp_path / "z", {"discovery": True}, zip_cifs=True)
    assert (tmp_path / "z" / "by_id.zip").is_file()
    assert not (tmp_path / "z" / "by_id").exists()
    report = load_entries(tmp_path / "z", compatibility=None)
    assert [e.entry_id for e in report] == ["r1-pro-00000"]  # the one discovery


def test_cli_exports_every_format(campaign, tmp_path, capsys):
    from ase.io import read
    from monty.serialization import loadfn

    from flywheel.launchers.cli import main as cli

    path, _, _ = campaign
    assert cli(["export", str(path), "--format", "gnome", "-o",
                str(tmp_path / "g")]) == 0
    assert "wrote 2 materials and 377 hull entries" in capsys.readouterr().out
    assert cli(["export", str(path), "--format", "cif", "--discoveries", "-o",
                str(tmp_path / "cifs")]) == 0
    assert sorted(p.name for p in (tmp_path / "cifs").iterdir()) == ["r1-pro-00000.cif"]
    assert cli(["export", str(path), "--format", "extxyz", "--formula", "LiFeO2",
                "-o", str(tmp_path / "m.xyz")]) == 0
    frames = read(tmp_path / "m.xyz", index=":")
    assert [f.info["material_id"] for f in frames] == ["r1-sub-00000"]
    assert frames[0].info["novelty"] == "known"
    assert cli(["export", str(path), "--format", "json", "-o",
                str(tmp_path / "all.json")]) == 0
    entries = loadfn(tmp_path / "all.json")
    assert sorted(e.entry_id for e in entries) == ["r1-pro-00000", "r1-sub-00000"]
    assert {e.entry_id: e.data["discovery"] for e in entries} == {
        "r1-pro-00000": True, "r1-sub-00000": False}
    # the FireWorks workflow stays the default format
    assert cli(["export", str(path), "-o", str(tmp_path / "wf.yaml")]) == 0
    assert "fws" in (tmp_path / "wf.yaml").read_text()
    assert cli(["export", str(path), "--format", "cif"]) == 2  # files need -o


def test_report_command_lists_the_discovery_and_draws_its_hull(campaign, tmp_path,
                                                               capsys):
    from flywheel.launchers.cli import main as cli

    path, _, _ = campaign
    assert cli(["report", str(path), "-o", str(tmp_path / "rep")]) == 0
    page = tmp_path / "rep" / "index.html"
    assert f"report: {page}" in capsys.readouterr().out
    text = page.read_text()
    # no rounds were run here: no round plots, but the hull and the tables
    assert sorted(p.name for p in (tmp_path / "rep").glob("*.png")) == [
        "hull_Fe-Li-O.png"]
    discoveries = text[text.index("<h2>Discoveries</h2>"):text.index("<h2>Known")]
    assert "r1-pro-00000" in discoveries and "F-43m (216)" in discoveries
    assert "r1-sub-00000" not in discoveries
    known = text[text.index("<h2>Known"):text.index("<h2>Plots")]
    assert "r1-sub-00000" in known and "mp-757614" in known
