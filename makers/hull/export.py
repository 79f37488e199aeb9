"""A campaign's results as files: the GNoME release layout, CIFs, extended XYZ, JSON.

The GNoME layout (Merchant et al. 2023, the release's DATASET.md) is what the field
already shares, and flywheel reads it back (``hull.references``, ``seeds.files``,
:func:`flywheel.makers.seeds.sources.load_entries`):

* ``stable_materials_summary.csv``: one row per material, the columns of
  :data:`GNOME_COLUMNS` in that order;
* ``stable_materials_hull.csv``: every entry of the campaign's hull (oracle results and
  the references that join it), ``MaterialId, Composition, Corrected Energy``, enough
  to rebuild the hull;
* ``by_id/<MaterialId>.CIF`` (or ``by_id.zip`` holding ``by_id/<MaterialId>.CIF``).

How flywheel fills the columns (the release's definitions, on the campaign's data):

* ``Corrected Energy``: the oracle's total energy of the cell (eV; MP2020-corrected for
  VASP, CHGNet's MP2020-compatible energy for CHGNet, CP2K's own energy for CP2K: not
  on the MP2020 scale, so a CP2K export is no reference set for another oracle);
* ``Formation Energy Per Atom``: against the lowest-energy unary entry of each element
  on the campaign's hull;
* ``Decomposition Energy Per Atom All``: energy above the hull of all entries (0 on
  the hull); ``... Relative``: for a stable entry its phase-separation energy
  (pymatgen's: against the hull of the other compositions, polymorphs excluded;
  negative), else its energy above the hull;
* ``Decomposition Energy Per Atom``, ``... MP`` and ``... MP OQMD``: against the
  **reference hull**, the known materials alone on the campaign's energy scale (the
  recomputed references when round 0 recomputed them, else the references' own
  energies; an element no reference covers takes its lowest campaign result).
  flywheel has one reference set, so the three columns are equal; GNoME's differ
  because it had MP and MP + OQMD;
* ``Dimensionality Cheon``: pymatgen's ``get_dimensionality_cheon``;
* ``Bandgap``: empty (no oracle here computes one); ``Is Train``: True (every oracle
  result trains the next ensemble).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.hull.engine import HullEngine

logger = logging.getLogger(__name__)

#: Columns of ``stable_materials_summary.csv``, in the release's order.
GNOME_COLUMNS: tuple[str, ...] = (
    "Composition", "MaterialId", "Reduced Formula", "Elements", "NSites", "Volume",
    "Density", "Point Group", "Space Group", "Space Group Number", "Crystal System",
    "Corrected Energy", "Formation Energy Per Atom", "Decomposition Energy Per Atom",
    "Dimensionality Cheon", "Bandgap", "Is Train", "Decomposition Energy Per Atom All",
    "Decomposition Energy Per Atom Relative", "Decomposition Energy Per Atom MP",
    "Decomposition Energy Per Atom MP OQMD",
)
#: Columns of ``stable_materials_hull.csv``.
HULL_COLUMNS: tuple[str, ...] = ("MaterialId", "Composition", "Corrected Energy")
SUMMARY_CSV = "stable_materials_summary.csv"
HULL_CSV = "stable_materials_hull.csv"
CIF_DIR = "by_id"
#: Formats of :func:`export_materials` besides ``gnome``.
STRUCTURE_FORMATS = ("cif", "extxyz", "json")

_MATERIAL_FIELDS = {
    "_id": 0, "material_id": 1, "formula": 1, "structure": 1, "energy": 1,
    "energy_per_atom": 1, "e_above_hull": 1, "decomposition_energy": 1, "stable": 1,
    "discovery": 1, "novelty": 1, "known_id": 1, "generator": 1, "round": 1,
    "oracle": 1, "uncorrected_energy": 1, "correction": 1,
}


#: Symmetry tolerance (Å) of the space-group columns, as the Materials Project uses.
SYMPREC = 0.1


def symmetry(structure: Structure) -> dict[str, Any]:
    """Point group, space group (symbol, number) and crystal system at
    :data:`SYMPREC`; every value None (logged) where spglib cannot decide."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
        return {"Point Group": sga.get_point_group_symbol(),
                "Space Group": sga.get_space_group_symbol(),
                "Space Group Number": sga.get_space_group_number(),
                "Crystal System": sga.get_crystal_system()}
    except Exception as exc:  # symmetry undetermined: empty cells, not a lost export
        logger.warning("no space group for %s: %s", structure.formula, exc)
        return dict.fromkeys(("Point Group", "Space Group", "Space Group Number",
                              "Crystal System"))


def cell_formula(composition: Composition) -> str:
    """The cell's formula, elements in alphabetical order, no spaces (``Fe2Li2O4``):
    GNoME's ``Composition`` (DATASET.md: an alphabetically ordered composition)."""
    return composition.alphabetical_formula.replace(" ", "")


def reference_hull(db: CampaignDB, config: CampaignConfig) -> HullEngine:
    """The hull of the known materials alone, on the campaign's energy scale.

    The recomputed references (oracle results of generator ``reference``) when round
    0 recomputed them, else the stored reference energies; an element no reference
    covers gets its lowest campaign result, so every system has a hull.
    """
    from pymatgen.core import Composition

    from flywheel.makers.hull.engine import HullEngine

    if config.recomputes_references():
        entries = [
            (d["material_id"], d["formula"], d["energy_per_atom"])
            for d in db.materials.find(
                db.q(generator="reference"),
                {"material_id": 1, "formula": 1, "energy_per_atom": 1})
        ]
    else:
        entries = [e for e in db.hull_entries(references=True)
                   if e[0].startswith("ref:")]
    covered = {Composition(f).elements[0].symbol for _, f, _ in entries
               if len(Composition(f).elements) == 1}
    unary: dict[str, tuple[str, str, float]] = {}
    for entry in db.hull_entries(references=False):
        comp = Composition(entry[1])
        if len(comp.elements) == 1 and (el := comp.elements[0].symbol) not in covered:
            if el not in unary or entry[2] < unary[el][2]:
                unary[el] = entry
    return HullEngine(entries + list(unary.values()),
                      tolerance=config.hull.on_hull_tolerance)


def elemental_energies(entries: list[tuple[str, str, float]]) -> dict[str, float]:
    """Element → lowest energy per atom among the unary ``entries``."""
    from pymatgen.core import Composition

    out: dict[str, float] = {}
    for _, formula, energy in entries:
        comp = Composition(formula)
        if len(comp.elements) == 1:
            el = comp.elements[0].symbol
            out[el] = min(energy, out.get(el, energy))
    return out


def gnome_row(
    doc: dict[str, Any], structure: Structure, mu: dict[str, float],
    reference_hull_energy: float | None,
) -> dict[str, Any]:
    """The summary row of one material (``doc`` from ``materials``; ``mu``: element
    energies per atom; ``reference_hull_energy``: the reference hull at its
    composition, None where there is none)."""
    from pymatgen.analysis.dimensionality import get_dimensionality_cheon

    comp = structure.composition
    e_pa = float(doc["energy_per_atom"])
    fractions = comp.fractional_composition
    formation = None
    if all(el.symbol in mu for el in comp.elements):
        formation = e_pa - sum(x * mu[el.symbol] for el, x in fractions.items())
    ref = None if reference_hull_energy is None else e_pa - reference_hull_energy
    try:
        dimensionality = get_dimensionality_cheon(structure)
    except Exception as exc:  # a bonding analysis that fails leaves the cell empty
        logger.warning("%s: no Cheon dimensionality: %s", doc["material_id"], exc)
        dimensionality = None
    return {
        "Composition": cell_formula(structure.composition),
        "MaterialId": doc["material_id"],
        "Reduced Formula": comp.reduced_formula,
        "Elements": str(sorted(el.symbol for el in comp.elements)),
        "NSites": len(structure),
        "Volume": float(structure.volume),
        "Density": float(structure.density),
        **symmetry(structure),
        "Corrected Energy": float(doc["energy"]),
        "Formation Energy Per Atom": formation,
        "Decomposition Energy Per Atom": ref,
        "Dimensionality Cheon": dimensionality,
        "Bandgap": None,
        "Is Train": True,
        "Decomposition Energy Per Atom All": doc.get("e_above_hull"),
        "Decomposition Energy Per Atom Relative": doc.get("decomposition_energy"),
        "Decomposition Energy Per Atom MP": ref,
        "Decomposition Energy Per Atom MP OQMD": ref,
    }


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})


def export_gnome(
    db: CampaignDB, config: CampaignConfig, directory: Path | str,
    query: dict[str, Any] | None = None, *, zip_cifs: bool = False,
) -> dict[str, Any]:
    """Write the campaign's materials in the GNoME release layout.

    Parameters
    ----------
    db, config
        The campaign.
    directory
        Output folder (created).
    query
        ``materials`` filter (within the campaign) of the summary's rows; default
        ``{"stable": True}``: every material on the hull. The hull file always holds
        every hull entry.
    zip_cifs
        ``by_id.zip`` instead of the ``by_id/`` folder.

    Returns
    -------
    dict
        ``n_materials``, ``n_hull_entries`` and the paths written.
    """
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    query = {"stable": True} if query is None else query
    all_entries = db.hull_entries(references=not config.recomputes_references())
    mu = elemental_energies(all_entries)
    refs = reference_hull(db, config)
    rows, cifs = [], {}
    docs = db.materials.find(db.q(**query), _MATERIAL_FIELDS).sort("material_id", 1)
    for doc in docs:
        structure = Structure.from_dict(doc["structure"])
        rows.append(gnome_row(doc, structure, mu,
                              refs.hull_energy(structure.composition)))
        cifs[doc["material_id"]] = str(CifWriter(structure))
    summary = directory / SUMMARY_CSV
    _write_csv(summary, GNOME_COLUMNS, rows)
    hull = directory / HULL_CSV
    _write_csv(hull, HULL_COLUMNS, _hull_rows(db, config))
    if zip_cifs:
        where = directory / f"{CIF_DIR}.zip"
        with zipfile.ZipFile(where, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for mid, text in cifs.items():
                archive.writestr(f"{CIF_DIR}/{mid}.CIF", text)
    else:
        where = directory / CIF_DIR
        where.mkdir(exist_ok=True)
        for mid, text in cifs.items():
            (where / f"{mid}.CIF").write_text(text, encoding="utf-8")
    logger.info("GNoME layout of %s: %d materials in %s", db.campaign, len(rows),
                directory)
    return {"n_materials": len(rows), "n_hull_entries": _count_rows(hull),
            "summary": str(summary), "hull": str(hull), "structures": str(where)}


def _hull_rows(db: CampaignDB, config: CampaignConfig) -> list[dict[str, Any]]:
    """Every hull entry as ``MaterialId, Composition, Corrected Energy`` (the total
    energy of the formula written)."""
    from pymatgen.core import Composition

    rows = []
    sizes = {d["material_id"]: d["nsites"] for d in db.materials.find(
        db.q(), {"material_id": 1, "nsites": 1})}
    for entry_id, formula, energy in db.hull_entries(
            references=not config.recomputes_references()):
        comp = Composition(formula)
        if entry_id in sizes:  # a campaign result: its cell
            comp = comp.reduced_composition * (
                sizes[entry_id] / comp.reduced_composition.num_atoms)
        rows.append({"MaterialId": entry_id,
                     "Composition": cell_formula(comp),
                     "Corrected Energy": energy * comp.num_atoms})
    return rows


def _count_rows(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1


def export_materials(
    db: CampaignDB, query: dict[str, Any], output: Path | str, fmt: str,
) -> dict[str, Any]:
    """Write the materials matching ``query`` as CIFs, extended XYZ or JSON entries.

    ``cif``: ``output/<material_id>.cif``; ``extxyz``: one file, every structure with
    its id, energies and hull fields in ``info``; ``json``: a list of pymatgen
    ``ComputedStructureEntry`` (``entry_id`` = material id, hull fields in ``data``).
    """
    from monty.json import jsanitize
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    if fmt not in STRUCTURE_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {STRUCTURE_FORMATS}")
    output = Path(output)
    docs = list(db.materials.find(db.q(**query), _MATERIAL_FIELDS)
                .sort("material_id", 1))
    meta_keys = ("formula", "energy_per_atom", "e_above_hull", "decomposition_energy",
                 "stable", "discovery", "novelty", "known_id", "generator", "round",
                 "oracle")
    if fmt == "cif":
        from pymatgen.io.cif import CifWriter

        output.mkdir(parents=True, exist_ok=True)
        for d in docs:
            CifWriter(Structure.from_dict(d["structure"])).write_file(
                output / f"{d['material_id']}.cif")
    elif fmt == "extxyz":
        from ase.io import write
        from pymatgen.io.ase import AseAtomsAdaptor

        output.parent.mkdir(parents=True, exist_ok=True)
        frames = []
        for d in docs:
            atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(d["structure"]))
            atoms.info.update({"material_id": d["material_id"], "energy": d["energy"],
                               **{k: d[k] for k in meta_keys
                                  if d.get(k) is not None}})
            frames.append(atoms)
        buf = io.StringIO()
        write(buf, frames, format="extxyz")
        output.write_text(buf.getvalue(), encoding="utf-8")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        # the oracle's split of the energy (VASP: raw + MP2020 correction) is kept
        entries = [
            ComputedStructureEntry(
                Structure.from_dict(d["structure"]),
                d.get("uncorrected_energy", d["energy"]),
                correction=d.get("correction") or 0.0,
                entry_id=d["material_id"],
                data={k: d.get(k) for k in meta_keys}).as_dict()
            for d in docs
        ]
        output.write_text(json.dumps(jsanitize(entries)), encoding="utf-8")
    return {"n_materials": len(docs), "output": str(output)}
