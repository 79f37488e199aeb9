"""Known materials as first-class references: structure, energy and provenance.

``hull.references`` (MP ``ComputedStructureEntry`` JSON, the GNoME layout, CIF folders
with an optional ``energies.csv``) and, with ``hull.mp_api``, the Materials Project
are read into the campaign's ``references`` collection, one document per known
material with its structure, energy, source and source id (e.g. ``mp-19419``). They
serve three purposes:

* **novelty**: every oracle result is matched against the reference structures of its
  composition (:mod:`flywheel.makers.hull.novelty`); a match is ``known``, never a
  discovery;
* **generation**: candidates matching a reference are dropped before the filter;
* **the hull**, on one energy scale: either the references' own energies join every
  hull (the vasp oracle: MP2020-corrected GGA/GGA+U, as MP and GNoME), or round 0
  recomputes the references within ``hull.recompute_window`` of their own hull with
  the oracle and the hull is built from those results only
  (``hull.recompute_references``, GNoME's recomputation of MP).

Pure functions here read files; :func:`store_references` writes the collection.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.db.stores import SCALE_MP2020, SCALE_USER

if TYPE_CHECKING:
    from pymatgen.core import Composition, Structure

    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB

__all__ = [
    "ENERGIES_CSV",
    "Reference",
    "missing_elemental_references",
    "read_references",
    "recompute_selection",
    "store_references",
]

logger = logging.getLogger(__name__)

#: Energies of a CIF reference folder: columns ``file`` and ``energy_per_atom``
#: (eV/atom) or ``energy`` (eV per cell of the CIF).
ENERGIES_CSV = "energies.csv"


@dataclass
class Reference:
    """One known material."""

    entry_id: str
    """Source id, unique per campaign (``mp-19419``, a GNoME MaterialId, or
    ``<folder>/<file>`` for CIFs)."""
    source: str
    """Where it was read from (file or folder path, or ``mp_api``)."""
    composition: Composition
    """Composition of the cell ``energy`` refers to."""
    energy: float | None
    """Total energy of that cell (eV), corrections included; None if unknown."""
    correction: float = 0.0
    """Energy correction included in ``energy`` (eV)."""
    structure: Structure | None = None
    """Structure, when the source has one."""
    energy_scale: str | None = None
    """``"MP2020"``, ``"as stored"`` (``hull.compatibility: none``), ``"user"`` or
    None (no energy)."""

    @property
    def energy_per_atom(self) -> float | None:
        """Energy per atom (eV/atom), None if unknown."""
        return None if self.energy is None else self.energy / self.composition.num_atoms


def _from_entries(report: Any, source: str, scale: str) -> list[Reference]:
    out = []
    for i, entry in enumerate(report):
        out.append(Reference(
            entry_id=str(entry.entry_id or f"{Path(source).name}[{i}]"),
            source=source, composition=entry.composition, energy=float(entry.energy),
            correction=float(entry.correction),
            structure=getattr(entry, "structure", None), energy_scale=scale,
        ))
    return out


def _read_energies(folder: Path) -> dict[str, tuple[str, float]]:
    """``file`` → (column, value) from a folder's ``energies.csv``."""
    path = folder / ENERGIES_CSV
    if not path.is_file():
        return {}
    out = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        cols = set(reader.fieldnames or [])
        column = ("energy_per_atom" if "energy_per_atom" in cols
                  else "energy" if "energy" in cols else None)
        if "file" not in cols or column is None:
            raise ValueError(f"{path}: needs columns 'file' and 'energy_per_atom' "
                             "(eV/atom) or 'energy' (eV per cell)")
        for row in reader:
            out[row["file"].strip()] = (column, float(row[column]))
    return out


def _from_structures(path: Path, elements: list[str]) -> tuple[list[Reference], Any]:
    """CIF/POSCAR references; energies from ``energies.csv`` beside them, if any."""
    from flywheel.makers.seeds.sources import load_structures

    report = load_structures(path, elements=elements)
    folder = path if path.is_dir() else path.parent
    energies = _read_energies(folder)
    out = []
    for label, structure in report:
        file, _, block = label.partition("[")
        entry_id = f"{folder.name}/{file}" + ("" if block in ("", "0]") else f"[{block}")
        energy = None
        if file in energies:
            column, value = energies[file]
            energy = value * len(structure) if column == "energy_per_atom" else value
        out.append(Reference(entry_id=entry_id, source=str(path),
                             composition=structure.composition, energy=energy,
                             structure=structure,
                             energy_scale=None if energy is None else SCALE_USER))
    return out, report


def _is_entry_source(path: Path) -> bool:
    from flywheel.makers.seeds.sources import _gnome_summary

    if _gnome_summary(path) is not None:
        return True
    names = [path.name] if path.is_file() else [p.name for p in path.iterdir()]
    return any(n.lower().endswith((".json", ".json.gz")) for n in names)


def read_references(config: CampaignConfig) -> tuple[list[Reference], dict[str, Any]]:
    """Every reference of ``hull.references`` (and the MP API with ``hull.mp_api``)
    within the campaign's elements.

    Returns
    -------
    (list of Reference, dict)
        The references, and per source its load report (rejections with reasons).
    """
    from flywheel.makers.seeds.sources import load_entries

    compat = None if config.hull.compatibility == "none" else config.hull.compatibility
    scale = SCALE_MP2020 if compat else "as stored"
    elements = config.chemistry.elements
    refs: list[Reference] = []
    reports: dict[str, Any] = {}
    for path in config.hull.references:
        path = Path(path)
        if _is_entry_source(path):
            report = load_entries(path, compat, elements=elements,
                                  require_structure=False)
            refs += _from_entries(report, str(path), scale)
        else:
            found, report = _from_structures(path, elements)
            refs += found
        reports[str(path)] = report
    if config.hull.mp_api:
        from flywheel.makers.seeds.mp_api import mp_api_entries

        report = mp_api_entries(elements, compatibility=compat)
        refs += _from_entries(report, "mp_api", scale)
        reports["mp_api"] = report
    return refs, reports


def _source_hull(refs: list[Reference]) -> dict[str, float]:
    """Energy above the references' own hull (eV/atom) by entry id, where defined."""
    from flywheel.makers.hull.engine import HullEngine

    engine = HullEngine([(r.entry_id, r.composition.formula, r.energy_per_atom)
                         for r in refs if r.energy is not None])
    return {k: rec.e_above_hull for k, rec in engine.results.items()}


def store_references(db: CampaignDB, config: CampaignConfig) -> dict[str, int]:
    """Read the references and upsert them into the ``references`` collection.

    Runs in round 0; entries are upserted by ``entry_id``, so a rerun stores nothing
    twice. Each document carries the structure (when the source has one), the energy
    (eV, eV/atom), ``energy_scale``, ``source``, ``source_e_above_hull`` (against the
    references' own hull; None without an energy or an elemental reference) and the
    searchable fields of a material.

    Returns
    -------
    dict
        ``references`` (stored), ``references_rejected`` and ``with_structure``.
    """
    from monty.json import jsanitize
    from pymongo import UpdateOne

    refs, reports = read_references(config)
    e_hull = _source_hull(refs)
    ops = []
    for ref in refs:
        comp = ref.composition
        els = sorted(el.symbol for el in comp.elements)
        doc = {
            "campaign": db.campaign, "entry_id": ref.entry_id, "source": ref.source,
            "energy": ref.energy, "energy_per_atom": ref.energy_per_atom,
            "correction": ref.correction, "energy_scale": ref.energy_scale,
            "source_e_above_hull": e_hull.get(ref.entry_id),
            "formula": comp.reduced_formula, "formula_full": comp.formula,
            "chemsys": "-".join(els), "elements": els, "nelements": len(els),
            "nsites": int(round(comp.num_atoms)),
            "structure": (None if ref.structure is None
                          else jsanitize(ref.structure.as_dict())),
        }
        ops.append(UpdateOne(db.q(entry_id=ref.entry_id), {"$set": doc}, upsert=True))
    db.bulk_write("references", ops)
    rejected = 0
    for source, report in reports.items():
        if report.rejected:
            logger.warning("%s: %s", source, report.summary())
        rejected += sum(1 for r in report.rejected
                        if "outside chemistry" not in r.reason)
    return {"references": len(ops), "references_rejected": rejected,
            "with_structure": sum(r.structure is not None for r in refs)}


def missing_elemental_references(
    config: CampaignConfig, refs: list[Reference] | None = None
) -> list[str]:
    """Elements of ``chemistry.elements`` without an elemental reference for the
    first hull, in order.

    An element is covered by the built-in seeds (``seeds.builtin``), by a one-element
    structure among the seed files, or by an elemental reference: with a structure
    when the campaign recomputes references, with an energy on the hull's scale
    otherwise. ``hull.mp_api`` is taken to cover every element (MP has them all).
    """
    if config.seeds.builtin or config.hull.mp_api:
        return []
    from flywheel.makers.seeds.sources import load_structures

    covered: set[str] = set()
    for path in config.seeds.files:
        for _, structure in load_structures(path, elements=config.chemistry.elements):
            if len(structure.composition.elements) == 1:
                covered.add(structure.composition.elements[0].symbol)
    if refs is None and config.hull.references:
        refs = read_references(config)[0]
    recompute = config.recomputes_references()
    for ref in refs or []:
        if len(ref.composition.elements) != 1:
            continue
        usable = (ref.structure is not None if recompute
                  else ref.energy is not None and ref.energy_scale != SCALE_USER)
        if usable:
            covered.add(ref.composition.elements[0].symbol)
    return [e for e in config.chemistry.elements if e not in covered]


def recompute_selection(db: CampaignDB, config: CampaignConfig) -> list[dict]:
    """Reference documents round 0 relaxes with the oracle, by entry id.

    Those with a structure, at most ``chemistry.max_elements`` elements (no candidate
    has more, so no hull needs them), and within ``hull.recompute_window`` of their
    own hull (or without an energy to tell).
    """
    window = config.hull.recompute_window
    query = db.q(structure={"$ne": None},
                 nelements={"$lte": config.chemistry.max_elements})
    docs = db.references.find(query, {"entry_id": 1, "structure": 1,
                                      "source_e_above_hull": 1}).sort("entry_id", 1)
    return [d for d in docs
            if d.get("source_e_above_hull") is None
            or d["source_e_above_hull"] <= window + 1e-9]
