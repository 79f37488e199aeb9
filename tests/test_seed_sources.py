"""Seeds and reference entries from real data (flywheel.makers.seeds.sources)."""

from __future__ import annotations

import copy
import csv
import functools
import sys
import zipfile
from typing import TYPE_CHECKING

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from flywheel.makers.seeds.mp_api import mp_api_entries
from flywheel.makers.seeds.sources import (
    GNOME_SUMMARY,
    EntryReport,
    LoadReport,
    apply_corrections,
    load_entries,
    load_structures,
)
from tests.structures import cscl, rocksalt

if TYPE_CHECKING:
    from pathlib import Path

MP_FILE = "mp_Li-Fe-O_entries.json.gz"
# The GNoME summary header (stable_materials_summary.csv, DATASET.md of
# google-deepmind/materials_discovery), including pandas' unnamed index column.
GNOME_COLUMNS = [
    "",
    "Composition",
    "MaterialId",
    "Reduced Formula",
    "Elements",
    "NSites",
    "Volume",
    "Density",
    "Point Group",
    "Space Group",
    "Space Group Number",
    "Crystal System",
    "Corrected Energy",
    "Formation Energy Per Atom",
    "Decomposition Energy Per Atom",
    "Dimensionality Cheon",
    "Bandgap",
    "Is Train",
    "Decomposition Energy Per Atom All",
    "Decomposition Energy Per Atom Relative",
    "Decomposition Energy Per Atom MP",
    "Decomposition Energy Per Atom MP OQMD",
]


@functools.cache
def _stored(path: Path) -> tuple:
    """Return the shared MP entries exactly as stored (read once per session)."""
    return tuple(load_entries(path, compatibility=None))


def stored_entries(shared_data: Path, keep=None) -> list:
    """Deep copies of the stored entries (those ``keep(entry)`` accepts)."""
    entries = _stored(shared_data / MP_FILE)
    return copy.deepcopy([e for e in entries if keep is None or keep(e)])


def by_id(entries) -> dict:
    """Map entry_id to entry."""
    return {e.entry_id: e for e in entries}


# --------------------------------------------------------------- MP entries (JSON)
def test_mp_entries_get_mp2020_corrections_once(shared_data):
    """MP2020 re-applied to the 375 MP entries reproduces MP's own corrections."""
    stored = by_id(_stored(shared_data / MP_FILE))
    report = load_entries(shared_data / MP_FILE)

    assert isinstance(report, EntryReport)
    assert isinstance(report, list)
    assert len(report) == len(stored) == 375
    assert report.rejected == []
    assert report.counts == {"loaded": 375, "rejected": 0}
    # recomputed MP2020 corrections equal the ones MP stored, entry by entry
    for entry in report:
        assert entry.correction == pytest.approx(stored[entry.entry_id].correction)
        assert len(entry.energy_adjustments) == len(
            stored[entry.entry_id].energy_adjustments
        )
    li2o = by_id(report)["mp-1960"]  # Li2O: one oxide O, -0.687 eV
    assert li2o.composition.reduced_formula == "Li2O"
    assert li2o.uncorrected_energy == pytest.approx(-14.26360048)
    assert li2o.correction == pytest.approx(-0.687)
    assert li2o.energy == pytest.approx(-14.95060048)
    fe2o3 = by_id(report)["mp-19770"]  # Fe4O6: 6 x -0.687 (oxide) + 4 x -2.256 (U)
    assert fe2o3.composition.reduced_formula == "Fe2O3"
    assert fe2o3.correction == pytest.approx(6 * -0.687 + 4 * -2.256)
    assert fe2o3.energy == pytest.approx(-80.6387644)
    assert sorted(a.name for a in fe2o3.energy_adjustments) == [
        "MP2020 GGA/GGA+U mixing correction (Fe)",
        "MP2020 anion correction (oxide)",
    ]


def test_corrections_are_idempotent_and_restore_stripped_entries(shared_data):
    """clean=True: stripped entries get them back, twice changes nothing."""
    # every Fe-O entry (GGA+U, oxide and U corrections) and the Li-O entries
    stored = stored_entries(
        shared_data, lambda e: "Li" not in e.composition or "Fe" not in e.composition
    )
    assert len(stored) > 150
    stripped = copy.deepcopy(stored)
    for entry in stripped:
        entry.energy_adjustments = []
    assert by_id(stripped)["mp-19770"].correction == 0

    once = apply_corrections(stripped)
    twice = apply_corrections(once)
    assert by_id(stripped)["mp-19770"].correction == 0  # inputs untouched
    for a, b, c in zip(stored, once, twice, strict=True):
        assert a.entry_id == b.entry_id == c.entry_id
        assert b.correction == pytest.approx(a.correction)
        assert c.correction == pytest.approx(a.correction)
        assert len(c.energy_adjustments) == len(a.energy_adjustments)
    assert by_id(twice)["mp-19770"].correction == pytest.approx(-13.146)


def test_incompatible_entries_are_reported_not_dropped(shared_data, tmp_path):
    """An entry MP2020 refuses is a rejection with the scheme's reason."""
    from monty.serialization import dumpfn

    entries = stored_entries(
        shared_data, lambda e: e.entry_id in ("mp-1960", "mp-19770", "mp-13")
    )
    by_id(entries)["mp-1960"].parameters["run_type"] = "R2SCAN"
    dumpfn(entries, tmp_path / "refs.json")

    report = load_entries(tmp_path / "refs.json")
    assert sorted(e.entry_id for e in report) == ["mp-13", "mp-19770"]
    assert len(report.rejected) == 1
    source, reason = report.rejected[0]
    assert source == "refs.json:mp-1960"
    assert "R2SCAN" in reason
    assert report.counts["incompatible"] == 1

    kept = load_entries(tmp_path / "refs.json", compatibility=None)
    assert len(kept) == 3
    assert by_id(kept)["mp-1960"].correction == pytest.approx(-0.687)
    with pytest.raises(ValueError, match="unknown compatibility"):
        load_entries(tmp_path / "refs.json", compatibility="MP2077")


def test_entry_json_filters_and_rejects_non_entries(shared_data, tmp_path):
    """Element filter and non-entry objects in an entry JSON are reported."""
    from monty.serialization import dumpfn

    entries = copy.deepcopy(list(_stored(shared_data / MP_FILE)[:40]))
    dumpfn([*entries, rocksalt()], tmp_path / "mixed.json.gz")
    report = load_entries(tmp_path / "mixed.json.gz", elements={"Li", "O"})
    assert report
    assert all(
        {el.symbol for el in e.composition.elements} <= {"Li", "O"} for e in report
    )
    assert report.counts["not an entry"] == 1
    outside = report.counts["outside chemistry"]
    assert len(report) + outside == 40

    structures = load_structures(tmp_path / "mixed.json.gz")
    assert len(structures) == 41
    assert structures.labels[0] == f"mixed.json.gz:{entries[0].entry_id}"
    assert structures.labels[-1] == "mixed.json.gz[40]"
    assert structures[0][1] == entries[0].structure


# ------------------------------------------------------------- structure files
def _cif_text(structure: Structure) -> str:
    return str(CifWriter(structure))


def test_cif_folder_with_corrupt_file(tmp_path):
    """A folder of CIF/POSCAR files; the corrupt CIF is rejected, not fatal."""
    folder = tmp_path / "seeds"
    (folder / "sub").mkdir(parents=True)
    (folder / "b_nacl.cif").write_text(_cif_text(rocksalt()))
    (folder / "a_two_blocks.cif").write_text(
        _cif_text(cscl()) + "\n" + _cif_text(rocksalt(5.0, ("K", "Br")))
    )
    (folder / "corrupt.cif").write_text("data_broken\n_cell_length_a 3.0\nnonsense\n")
    cscl(3.5).to(filename=str(folder / "POSCAR"), fmt="poscar")
    (folder / "README.txt").write_text("not a structure")
    (folder / "sub" / "deep.cif").write_text(_cif_text(rocksalt(4.2, ("Li", "F"))))

    report = load_structures(folder)
    assert isinstance(report, LoadReport)
    assert report.labels == [
        "POSCAR[0]",
        "a_two_blocks.cif[0]",
        "a_two_blocks.cif[1]",
        "b_nacl.cif[0]",
    ]
    formulas = [s.composition.reduced_formula for s in report.structures]
    assert formulas == ["NaCl", "NaCl", "KBr", "NaCl"]
    assert report.structures[0].lattice.a == pytest.approx(3.5)
    assert len(report.rejected) == 1
    source, reason = report.rejected[0]
    assert source == "corrupt.cif"
    assert reason  # the parser's message, e.g. "Invalid CIF file with no structures"
    assert report.skipped == ["README.txt"]
    assert report.counts == {"loaded": 4, "rejected": 1, "unreadable": 1}

    deep = load_structures(folder, recursive=True)
    assert "sub/deep.cif[0]" in deep.labels

    only_kbr = load_structures(folder, elements=["K", "Br"])
    assert only_kbr.labels == ["a_two_blocks.cif[1]"]
    assert only_kbr.counts["outside chemistry"] == 3

    single = load_structures(folder / "a_two_blocks.cif")
    assert single.labels == ["a_two_blocks.cif[0]", "a_two_blocks.cif[1]"]


def test_check_option_rejects_overlapping_atoms(tmp_path):
    """check=True rejects structures failing check_structure, with its reason."""
    squeezed = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]])
    (tmp_path / "bad.cif").write_text(_cif_text(squeezed))
    (tmp_path / "good.cif").write_text(_cif_text(rocksalt()))
    assert len(load_structures(tmp_path)) == 2
    checked = load_structures(tmp_path, check=True)
    assert checked.labels == ["good.cif[0]"]
    assert checked.rejected[0].source == "bad.cif[0]"
    assert "apart" in checked.rejected[0].reason
    assert checked.counts["failed check"] == 1


def test_extxyz_multiframe(tmp_path):
    """Every frame of an extxyz file is a structure."""
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    frames = [AseAtomsAdaptor.get_atoms(rocksalt(a)) for a in (5.4, 5.6, 5.8)]
    write(tmp_path / "traj.extxyz", frames, format="extxyz")
    report = load_structures(tmp_path / "traj.extxyz")
    assert report.labels == ["traj.extxyz[0]", "traj.extxyz[1]", "traj.extxyz[2]"]
    for (_, structure), a in zip(report, (5.4, 5.6, 5.8), strict=True):
        assert structure.volume == pytest.approx(rocksalt(a).volume)
        assert structure.composition.reduced_formula == "NaCl"


def test_missing_path_names_it(tmp_path):
    """A missing path raises FileNotFoundError naming it."""
    missing = tmp_path / "nope" / "seeds.cif"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_structures(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_entries(missing)


# ----------------------------------------------------------------- GNoME layout
GNOME_IDS = {"mp-1960": "a0b1c2d3e4", "mp-19770": "f5e6d7c8b9", "mp-13": "0123abcdef"}


def _write_gnome(folder: Path, entries: list, zipped: bool) -> dict:
    """Write a GNoME-layout folder from real MP entries; return expectations."""
    folder.mkdir()
    rows, cifs = [], {}
    for i, entry in enumerate(entries):
        mid = GNOME_IDS[entry.entry_id]
        structure = entry.structure
        if entry.entry_id == "mp-13":  # CIF holds a 2x supercell of the NSites cell
            structure = structure * (2, 1, 1)
        cifs[mid] = _cif_text(structure)
        comp = entry.composition
        cell_formula = "".join(
            f"{el}{int(n)}" for el, n in sorted(comp.items(), key=lambda x: str(x[0]))
        )  # GNoME's alphabetical "Composition", e.g. "Fe4O6"
        rows.append(
            {
                "": i,
                "Composition": cell_formula,
                "MaterialId": mid,
                "Reduced Formula": comp.reduced_formula,
                "Elements": str([el.symbol for el in comp.elements]),
                "NSites": f"{comp.num_atoms:.1f}",
                "Corrected Energy": entry.energy,
                "Formation Energy Per Atom": -1.0,
                "Decomposition Energy Per Atom": -0.01,
            }
        )
    rows.append(
        {
            "": 7,
            "Composition": "Li4O2",
            "MaterialId": "nocif00000",
            "Reduced Formula": "Li2O",
            "Elements": "['Li', 'O']",
            "NSites": 6.0,
            "Corrected Energy": -28.0,
        }
    )
    rows.append(
        {
            "": 8,
            "Composition": "Na1Cl1",
            "MaterialId": "nacl000000",
            "Reduced Formula": "NaCl",
            "Elements": "['Na', 'Cl']",
            "NSites": 2.0,
            "Corrected Energy": -6.0,
        }
    )
    rows.append(
        {
            "": 9,
            "Composition": "Fe1O1",
            "MaterialId": "broken0000",
            "Reduced Formula": "FeO",
            "Elements": "['Fe', 'O']",
            "NSites": 2.0,
            "Corrected Energy": -15.0,
        }
    )
    cifs["broken0000"] = "data_broken\nthis is not a CIF\n"
    with (folder / GNOME_SUMMARY).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=GNOME_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if zipped:
        with zipfile.ZipFile(folder / "by_id.zip", "w") as archive:
            for mid, text in cifs.items():
                archive.writestr(f"by_id/{mid}.CIF", text)
    else:
        (folder / "by_id").mkdir()
        for mid, text in cifs.items():
            (folder / "by_id" / f"{mid}.CIF").write_text(text)
    return {GNOME_IDS[e.entry_id]: e for e in entries}


@pytest.mark.parametrize("zipped", [False, True], ids=["by_id", "by_id.zip"])
def test_gnome_layout(shared_data, tmp_path, zipped):
    """GNoME summary CSV + CIFs by id (folder or zip): structures and entries."""
    entries = stored_entries(shared_data, lambda e: e.entry_id in GNOME_IDS)
    expected = _write_gnome(tmp_path / "gnome_data", entries, zipped)

    structures = load_structures(tmp_path / "gnome_data")
    assert sorted(structures.labels) == sorted(f"gnome:{m}" for m in expected)
    rejected = dict(structures.rejected)
    assert set(rejected) == {"gnome:nocif00000", "gnome:nacl000000", "gnome:broken0000"}
    assert "no CIF nocif00000.CIF" in rejected["gnome:nocif00000"]
    assert "outside chemistry" not in structures.counts  # no element filter
    assert "unreadable CIF" in rejected["gnome:broken0000"]

    report = load_entries(tmp_path / "gnome_data", elements="Li-Fe-O")
    got = by_id(report)
    assert set(got) == set(expected)
    for mid, source in expected.items():
        entry = got[mid]
        assert entry.correction == 0  # GNoME energies are already MP2020-corrected
        assert entry.data["corrections"] == "MP2020 (applied by GNoME)"
        # energy per atom of the CIF cell equals the summary's (NSites) energy/atom
        assert entry.energy_per_atom == pytest.approx(source.energy_per_atom)
    assert len(got["0123abcdef"].structure) == 2 * len(expected["0123abcdef"].structure)
    assert got["0123abcdef"].energy == pytest.approx(2 * expected["0123abcdef"].energy)
    assert got["a0b1c2d3e4"].energy == pytest.approx(-14.95060048)  # mp-1960
    assert report.counts["outside chemistry"] == 1  # NaCl, dropped before its CIF
    assert report.counts["missing"] == 1

    loose = load_entries(
        tmp_path / "gnome_data", elements="Li-Fe-O", require_structure=False
    )
    nocif = by_id(loose)["nocif00000"]
    assert not hasattr(nocif, "structure")
    assert nocif.energy_per_atom == pytest.approx(-28.0 / 6)

    # the summary CSV itself is accepted too
    assert len(load_structures(tmp_path / "gnome_data" / GNOME_SUMMARY)) == 3


def test_gnome_layout_without_shared_data(tmp_path):
    """The GNoME zip layout with hand-built structures (runs on a fresh clone)."""
    folder = tmp_path / "gnome_data"
    folder.mkdir()
    rows = [
        ("nacl000001", rocksalt(), "Cl1Na1", "NaCl", "['Na', 'Cl']", -6.8),
        ("cscl000002", cscl(), "Cl1Na1", "NaCl", "['Na', 'Cl']", -6.6),
        ("kbr0000003", rocksalt(6.6, ("K", "Br")), "Br1K1", "KBr", "['K', 'Br']", -6.0),
    ]
    with (folder / GNOME_SUMMARY).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=GNOME_COLUMNS)
        writer.writeheader()
        for i, (mid, _, comp, formula, elements, energy) in enumerate(rows):
            writer.writerow({"": i, "Composition": comp, "MaterialId": mid,
                             "Reduced Formula": formula, "Elements": elements,
                             "NSites": 2.0, "Corrected Energy": energy})  # fmt: skip
    with zipfile.ZipFile(folder / "by_id.zip", "w") as archive:
        for mid, structure, *_ in rows:
            archive.writestr(f"by_id/{mid}.CIF", _cif_text(structure))

    entries = load_entries(folder, elements=["Na", "Cl"])
    assert [e.entry_id for e in entries] == ["nacl000001", "cscl000002"]
    assert [e.energy_per_atom for e in entries] == pytest.approx([-3.4, -3.3])
    assert entries.counts == {"loaded": 2, "rejected": 1, "outside chemistry": 1}
    # the archive on its own is a zip of CIFs: structures, no energies
    alone = load_structures(folder / "by_id.zip")
    assert alone.labels == [f"by_id.zip/by_id/{m}.CIF[0]" for m in sorted(
        r[0] for r in rows)]  # fmt: skip


def test_empty_and_unreadable_json_are_rejections(tmp_path):
    """An empty JSON list and a non-JSON file are reported, the rest loads."""
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "nacl.cif").write_text(_cif_text(rocksalt()))
    report = load_structures(tmp_path)
    assert report.labels == ["nacl.cif[0]"]
    assert [r.source for r in report.rejected] == ["empty.json", "junk.json"]
    assert "no structures" in report.rejected[0].reason
    entries = load_entries(tmp_path)
    assert list(entries) == []
    assert [r.source for r in entries.rejected] == ["junk.json"]
    assert entries.skipped == ["nacl.cif"]


# ---------------------------------------------------------------- Materials Project
class StandInMPRester:
    """Stand-in for mp_api.client.MPRester serving the shared Li-Fe-O entries."""

    calls: list = []

    def __init__(self, api_key: str, entries: list) -> None:
        self.api_key = api_key
        self.entries = entries

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def get_entries_in_chemsys(
        self,
        elements,
        use_gibbs=None,
        compatible_only=True,
        inc_structure=None,
        property_data=None,
        conventional_unit_cell=False,
        additional_criteria=None,
    ):
        """Entries within ``elements`` (mp-api's signature)."""
        if isinstance(elements, str):
            elements = elements.split("-")
        self.calls.append(
            (self.api_key, list(elements), compatible_only, additional_criteria)
        )
        allowed = set(elements)
        return [
            copy.deepcopy(e)
            for e in self.entries
            if {el.symbol for el in e.composition.elements} <= allowed
        ]


def test_mp_api_through_client_seam(shared_data, monkeypatch):
    """mp_api_entries with a stand-in client: query, key from env, corrections."""
    entries = _stored(shared_data / MP_FILE)  # the stand-in serves deep copies
    StandInMPRester.calls = []
    monkeypatch.setenv("MP_API_KEY", "k" * 32)

    def factory(key):
        return StandInMPRester(key, entries)

    report = mp_api_entries(["O", "Li"], client_factory=factory)
    expected = {
        e.entry_id
        for e in entries
        if {el.symbol for el in e.composition.elements} <= {"Li", "O"}
    }
    assert {e.entry_id for e in report} == expected
    assert len(report) == 52
    assert StandInMPRester.calls == [("k" * 32, ["Li", "O"], True, None)]
    assert by_id(report)["mp-1960"].correction == pytest.approx(-0.687)

    report = mp_api_entries(
        "Li-Fe-O",
        api_key="x" * 32,
        client_factory=factory,
        additional_criteria={"is_stable": True},
    )
    assert len(report) == 375
    assert StandInMPRester.calls[-1] == (
        "x" * 32,
        ["Fe", "Li", "O"],
        True,
        {"is_stable": True},
    )


def test_mp_api_needs_a_key(monkeypatch):
    """No api_key and no MP_API_KEY: a ValueError saying how to set it."""
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ValueError, match="MP_API_KEY"):
        mp_api_entries(["Li", "O"], client_factory=lambda key: None)


def test_mp_api_missing_package(monkeypatch):
    """Without mp-api and without a client_factory: a clear ImportError."""
    monkeypatch.setitem(sys.modules, "mp_api", None)
    monkeypatch.setitem(sys.modules, "mp_api.client", None)
    with pytest.raises(ImportError, match="install mp-api"):
        mp_api_entries(["Li", "O"], api_key="k" * 32)
