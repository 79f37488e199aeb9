"""Seeds and reference entries from real data.

Structures (seeds) and computed entries (hull references) from the formats real
campaigns start from:

* Materials Project ``ComputedStructureEntry`` JSON (``.json``/``.json.gz``, one entry
  or a list), with the MP2020 corrections re-applied exactly once;
* single CIF (every data block), POSCAR/CONTCAR/``*.vasp``, (extended) XYZ (every
  frame), JSON holding structures, and folders of those files;
* the GNoME data release layout (``stable_materials_summary.csv`` plus the CIFs by
  id, as the ``by_id/`` folder or the ``by_id.zip`` archive);
* the Materials Project API: :mod:`flywheel.makers.seeds.mp_api` (optional dependency).

Nothing here is fatal per input: every file, block, row or entry that cannot be used
is recorded as a :class:`Rejection` (source and reason) in the returned report, and
logged.  See ``docs/seeds.md``.
"""

from __future__ import annotations

import ast
import copy
import csv
import logging
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pymatgen.core import Composition, Element, Structure

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from pymatgen.entries.compatibility import Compatibility
    from pymatgen.entries.computed_entries import ComputedEntry

__all__ = [
    "GNOME_SUMMARY",
    "EntryReport",
    "LoadReport",
    "Rejection",
    "apply_corrections",
    "load_entries",
    "load_structures",
]

logger = logging.getLogger(__name__)

#: Name of the GNoME summary table (``gs://gdm_materials_discovery/gnome_data``).
GNOME_SUMMARY = "stable_materials_summary.csv"
#: Columns of the GNoME summary table this module reads.
GNOME_ID, GNOME_ENERGY = "MaterialId", "Corrected Energy"
_GNOME_CIF_DIR, _GNOME_CIF_ZIP = "by_id", "by_id.zip"

_STRUCTURE_SUFFIXES = (
    ".cif",
    ".vasp",
    ".poscar",
    ".extxyz",
    ".xyz",
    ".json",
    ".json.gz",
)
_ENTRY_SUFFIXES = (".json", ".json.gz")


# ------------------------------------------------------------------------- reports
class Rejection(NamedTuple):
    """An input that was not used: where it came from and why."""

    source: str
    reason: str


class _Report(list):
    """A list of loaded items plus what was rejected (shared by both reports)."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self.rejected: list[Rejection] = []
        self.skipped: list[str] = []
        self._kinds: Counter[str] = Counter()

    def reject(self, source: str, reason: str, kind: str = "unreadable") -> None:
        """Record a rejection; ``kind`` groups rejections in :attr:`counts`."""
        self.rejected.append(Rejection(source, reason))
        self._kinds[kind] += 1
        log = logger.debug if kind == "outside chemistry" else logger.warning
        log("rejected %s: %s", source, reason)

    def merge(self, other: _Report) -> None:
        """Append the items, rejections and skipped files of ``other``."""
        self.extend(other)
        self.rejected.extend(other.rejected)
        self.skipped.extend(other.skipped)
        self._kinds.update(other._kinds)

    @property
    def counts(self) -> dict[str, int]:
        """``{"loaded": n, "rejected": m, <kind>: k, ...}``.

        Kinds: ``"unreadable"`` (file, block or row could not be parsed),
        ``"outside chemistry"`` (elements not in the filter), ``"failed check"``
        (:func:`~flywheel.makers.generate.structures.check_structure`), ``"missing"`` (GNoME
        row without CIF or energy), ``"incompatible"`` (rejected by the correction
        scheme), ``"not an entry"``.
        """
        return {"loaded": len(self), "rejected": len(self.rejected), **self._kinds}

    def summary(self) -> str:
        """One line: counts of loaded and rejected items."""
        parts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        return f"{type(self).__name__}({parts})"


class LoadReport(_Report):
    """Structures loaded by :func:`load_structures`: a list of ``(label, structure)``.

    Attributes
    ----------
    rejected
        :class:`Rejection` ``(source, reason)`` for every file, block or row dropped.
    skipped
        Files in a folder that are not structure files (by name); not rejections.
    counts
        Loaded and rejected counts by kind (see :attr:`_Report.counts`).
    """

    @property
    def structures(self) -> list[Structure]:
        """The structures without their labels."""
        return [s for _, s in self]

    @property
    def labels(self) -> list[str]:
        """The source labels, e.g. ``"sub/a.cif[0]"`` or ``"gnome:<MaterialId>"``."""
        return [label for label, _ in self]


class EntryReport(_Report):
    """Entries loaded by :func:`load_entries` / :func:`mp_api_entries` (a list).

    ``rejected`` lists ``(source, reason)`` for every entry, file or row dropped,
    including entries the correction scheme refused (kind ``"incompatible"``).
    """


# ------------------------------------------------------------------------ helpers
def _normalize_elements(elements: Iterable[str] | str | None) -> frozenset[str] | None:
    """Element symbols of an iterable or a string such as ``"Li-Fe-O"``."""
    if elements is None:
        return None
    if isinstance(elements, str):
        elements = elements.replace(",", " ").replace("-", " ").split()
    return frozenset(Element(str(e).strip()).symbol for e in elements)


def _outside(symbols: Iterable[str], allowed: frozenset[str] | None) -> list[str]:
    return [] if allowed is None else sorted(set(symbols) - allowed)


def _symbols(composition: Composition) -> list[str]:
    return [el.symbol for el in composition.elements]


def _is_structure_file(name: str) -> bool:
    low = name.lower()
    return low.endswith(_STRUCTURE_SUFFIXES) or low.startswith(("poscar", "contcar"))


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return (
        text if text.startswith("could not read") else f"{type(exc).__name__}: {text}"
    )


def _parse_cif_text(text: str) -> list[Structure]:
    """All data blocks of a CIF given as text (parser warnings silenced)."""
    from pymatgen.io.cif import CifParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structures = CifParser.from_str(text).parse_structures(primitive=False)
    if not structures:
        raise ValueError("no structures in CIF")
    return list(structures)


def _load_json(path: Path) -> Any:
    from monty.serialization import loadfn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return loadfn(path)


def _flatten_json(obj: Any) -> Iterator[Any]:
    """Entries, structures and undecodable dicts in a deserialized JSON object."""
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _flatten_json(item)
    elif isinstance(obj, dict) and set(obj) == {"entries"}:
        yield from _flatten_json(obj["entries"])  # a {"entries": [...]} wrapper
    else:
        yield obj


def _as_entry(obj: Any) -> ComputedEntry | None:
    """``obj`` as a ComputedEntry (decoding a plain entry dict), else ``None``."""
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    if isinstance(obj, ComputedEntry):
        return obj
    if isinstance(obj, dict) and "energy" in obj and "composition" in obj:
        cls = ComputedStructureEntry if "structure" in obj else ComputedEntry
        return cls.from_dict(obj)
    return None


def _as_structure(obj: Any) -> Structure | None:
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    if isinstance(obj, Structure):
        return obj
    if isinstance(obj, ComputedStructureEntry):
        return obj.structure
    if isinstance(obj, dict):
        if "structure" in obj:
            return _as_structure(obj["structure"])
        if "lattice" in obj and "sites" in obj:
            return Structure.from_dict(obj)
    return None


# ------------------------------------------------------------------- GNoME layout
def _gnome_summary(path: Path) -> Path | None:
    """Return the GNoME summary CSV at ``path`` (folder or CSV), else None."""
    if path.is_file():
        return path if path.suffix.lower() == ".csv" and _has_id_column(path) else None
    if path.is_dir():
        preferred = path / GNOME_SUMMARY
        if preferred.is_file():
            return preferred
        for csv_path in sorted(path.glob("*.csv")):
            if _has_id_column(csv_path):
                return csv_path
    return None


def _has_id_column(path: Path) -> bool:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return False
    return GNOME_ID in header


class _GnomeCifs:
    """CIF text by MaterialId from ``by_id/`` (folder) or ``by_id.zip``."""

    def __init__(self, root: Path) -> None:
        self.folder = root / _GNOME_CIF_DIR
        self.zip: zipfile.ZipFile | None = None
        self.members: dict[str, str] = {}
        if not self.folder.is_dir():
            self.folder = root  # CIFs lying next to the summary
            archive = root / _GNOME_CIF_ZIP
            if archive.is_file():
                self.zip = zipfile.ZipFile(archive)
                for name in self.zip.namelist():  # "by_id/<id>.CIF" in the release
                    base = name.rsplit("/", 1)[-1]
                    if base.lower().endswith(".cif"):
                        self.members.setdefault(base[:-4], name)
        self.files: dict[str, Path] = {}
        if self.zip is None:
            for file in self.folder.iterdir():
                if file.suffix.lower() == ".cif":
                    self.files.setdefault(file.stem, file)

    @property
    def where(self) -> str:
        return str(self.zip.filename if self.zip is not None else self.folder)

    def text(self, material_id: str) -> str | None:
        if self.zip is not None:
            name = self.members.get(material_id)
            return None if name is None else self.zip.read(name).decode("utf-8")
        file = self.files.get(material_id)
        return None if file is None else file.read_text(encoding="utf-8")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _row_elements(row: dict[str, str]) -> list[str] | None:
    """Elements of a GNoME row from ``Elements`` ("['Li', 'O']") or the formula."""
    raw = (row.get("Elements") or "").strip()
    if raw:
        try:
            value = ast.literal_eval(raw)
            return [
                str(e) for e in (value if isinstance(value, (list, tuple)) else [value])
            ]
        except (ValueError, SyntaxError):
            return [e.strip(" '\"") for e in raw.strip("[]").split(",") if e.strip()]
    formula = row.get("Composition") or row.get("Reduced Formula")
    return _symbols(Composition(formula)) if formula else None


def _gnome_rows(
    summary: Path,
    allowed: frozenset[str] | None,
    report: _Report,
    *,
    want_structure: bool,
) -> Iterator[tuple[str, dict[str, str], Structure | None]]:
    """Yield ``(material_id, row, structure)`` of GNoME rows within ``allowed``.

    Rows outside the chemistry are dropped from the ``Elements`` column before any
    CIF is read (the release has ~381k rows).  ``structure`` is ``None`` when no CIF
    exists and ``want_structure`` is false; otherwise a missing or unreadable CIF is
    a rejection.
    """
    cifs = _GnomeCifs(summary.parent)
    try:
        with summary.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if GNOME_ID not in (reader.fieldnames or []):
                raise ValueError(f"{summary}: no '{GNOME_ID}' column")
            for line, row in enumerate(reader, start=2):
                material_id = (row.get(GNOME_ID) or "").strip()
                source = (
                    f"gnome:{material_id}" if material_id else f"{summary.name}:{line}"
                )
                if not material_id:
                    report.reject(source, f"row {line} has no {GNOME_ID}")
                    continue
                try:
                    symbols = _row_elements(row)
                except ValueError as exc:
                    report.reject(source, f"unreadable elements: {exc}")
                    continue
                if symbols is not None and (extra := _outside(symbols, allowed)):
                    report.reject(
                        source,
                        f"elements {extra} outside chemistry",
                        "outside chemistry",
                    )
                    continue
                text = cifs.text(material_id)
                if text is None:
                    if want_structure:
                        report.reject(
                            source,
                            f"no CIF {material_id}.CIF in {cifs.where}",
                            "missing",
                        )
                    else:
                        yield material_id, row, None
                    continue
                try:
                    structure = _parse_cif_text(text)[0]
                except Exception as exc:
                    report.reject(source, f"unreadable CIF: {_why(exc)}")
                    continue
                if extra := _outside(_symbols(structure.composition), allowed):
                    report.reject(
                        source,
                        f"elements {extra} outside chemistry",
                        "outside chemistry",
                    )
                    continue
                yield material_id, row, structure
    finally:
        cifs.close()


def _gnome_entry(
    material_id: str, row: dict[str, str], structure: Structure | None
) -> ComputedEntry:
    """Entry of one GNoME row; raises ValueError (with the reason) if unusable."""
    from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

    raw = (row.get(GNOME_ENERGY) or "").strip()
    if not raw:
        raise ValueError(f"no '{GNOME_ENERGY}'")
    energy = float(raw)
    if "Composition" in row and row["Composition"].strip():
        cell = Composition(row["Composition"])
    elif row.get("NSites") and row.get("Reduced Formula"):
        reduced = Composition(row["Reduced Formula"])
        cell = reduced * (float(row["NSites"]) / reduced.num_atoms)
    elif structure is not None:
        cell = structure.composition
    else:
        raise ValueError("no Composition, NSites or CIF to size the energy")
    data = {
        "source": "gnome",
        "material_id": material_id,
        "corrections": "MP2020 (applied by GNoME)",
    }
    for key in (
        "Formation Energy Per Atom",
        "Decomposition Energy Per Atom",
        "Reduced Formula",
        "Space Group Number",
    ):
        if (row.get(key) or "").strip():
            data[key] = row[key]
    if structure is None:
        return ComputedEntry(cell, energy, entry_id=material_id, data=data)
    comp = structure.composition
    if comp.reduced_formula != cell.reduced_formula:
        raise ValueError(
            f"CIF formula {comp.reduced_formula} differs from the "
            f"summary's {cell.reduced_formula}"
        )
    energy *= comp.num_atoms / cell.num_atoms  # CIF cell may differ from NSites
    return ComputedStructureEntry(structure, energy, entry_id=material_id, data=data)


# ----------------------------------------------------------------- structure files
def _structures_in_file(path: Path, label: str, report: LoadReport) -> None:
    """Append every structure of one file (or reject the file)."""
    from flywheel.makers.seeds.core import load_seed_file

    low = path.name.lower()
    try:
        if low.endswith(".zip"):
            _structures_in_zip(path, label, report)
            return
        if low.endswith(_ENTRY_SUFFIXES):
            objects = list(_flatten_json(_load_json(path)))
            if not objects:
                raise ValueError("no structures found")
            for i, obj in enumerate(objects):
                entry_id = getattr(obj, "entry_id", None)
                item = f"{label}:{entry_id}" if entry_id else f"{label}[{i}]"
                try:
                    structure = _as_structure(obj)
                except Exception as exc:
                    report.reject(item, f"unreadable structure: {_why(exc)}")
                    continue
                if structure is None:
                    kind = type(obj).__name__
                    report.reject(item, f"not a structure or entry ({kind})")
                    continue
                report.append((item, structure))
            return
        structures = load_seed_file(path)
    except Exception as exc:
        report.reject(label, _why(exc))
        return
    report.extend((f"{label}[{i}]", s) for i, s in enumerate(structures))


def _structures_in_zip(path: Path, label: str, report: LoadReport) -> None:
    """CIF members of a zip archive (e.g. GNoME's ``by_id.zip`` on its own)."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith(".cif"))
        for name in names:
            source = f"{label}/{name}"
            try:
                structures = _parse_cif_text(archive.read(name).decode("utf-8"))
            except Exception as exc:
                report.reject(source, _why(exc))
                continue
            report.extend((f"{source}[{i}]", s) for i, s in enumerate(structures))


def _filter_structures(
    report: LoadReport, allowed: frozenset[str] | None, check: bool
) -> None:
    """Reject, in place, structures outside ``allowed`` or failing the checks."""
    from flywheel.makers.generate.structures import check_structure

    items = list(report)
    report.clear()
    for label, structure in items:
        if extra := _outside(_symbols(structure.composition), allowed):
            report.reject(
                label, f"elements {extra} outside chemistry", "outside chemistry"
            )
        elif check and (reason := check_structure(structure)) is not None:
            report.reject(label, reason, "failed check")
        else:
            report.append((label, structure))


def load_structures(
    path: Path | str,
    *,
    elements: Iterable[str] | str | None = None,
    recursive: bool = False,
    check: bool = False,
) -> LoadReport:
    """Read every structure in a file or folder; unreadable inputs are not fatal.

    ``path`` may be

    * a file: CIF (every data block), POSCAR/CONTCAR/``*.vasp``/``*.poscar``,
      ``*.extxyz``/``*.xyz`` (every frame, ASE), JSON/JSON.gz (a Structure, a
      ComputedStructureEntry or a list of them, read with ``monty.loadfn``), a zip
      of CIFs, or a GNoME summary CSV (CIFs looked up next to it);
    * the GNoME layout: a folder holding ``stable_materials_summary.csv`` (or any
      CSV with a ``MaterialId`` column) and the CIFs by id, as ``by_id/<id>.CIF`` or
      ``by_id.zip``; one structure per CSV row;
    * any other folder: its structure files (by the names above) in sorted order,
      sub-folders only if ``recursive``.  Other files are listed in ``skipped``.

    Parameters
    ----------
    path
        File or folder.
    elements
        Keep only structures whose elements are a subset; the others are rejected
        as ``"outside chemistry"`` (GNoME rows before their CIF is read).
    recursive
        Descend into sub-folders of a plain folder.
    check
        Also reject structures failing
        :func:`~flywheel.makers.generate.structures.check_structure` (reason kept).

    Returns
    -------
    LoadReport
        A list of ``(label, structure)``; labels are ``"<relative path>[<i>]"``,
        ``"<file>:<entry_id>"`` for entries and ``"gnome:<MaterialId>"``.  Its
        ``rejected`` holds ``(source, reason)`` for every dropped input.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (the message names it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure source not found: {path}")
    allowed = _normalize_elements(elements)
    report = LoadReport()
    if (summary := _gnome_summary(path)) is not None:
        for material_id, _, structure in _gnome_rows(
            summary, allowed, report, want_structure=True
        ):
            report.append((f"gnome:{material_id}", structure))
    elif path.is_file():
        _structures_in_file(path, path.name, report)
    else:
        files = sorted(
            p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file()
        )
        for file in files:
            rel = file.relative_to(path).as_posix()
            if _is_structure_file(file.name) or file.name.lower().endswith(".zip"):
                _structures_in_file(file, rel, report)
            else:
                report.skipped.append(rel)
    _filter_structures(report, allowed, check)
    logger.info("%s: %s", path, report.summary())
    return report


# ------------------------------------------------------------------------ entries
def _compatibility(compatibility: str | Compatibility | None) -> Compatibility | None:
    from pymatgen.entries.compatibility import (
        Compatibility,
        MaterialsProject2020Compatibility,
    )

    if compatibility is None or isinstance(compatibility, Compatibility):
        return compatibility
    if str(compatibility).upper().replace("_", "") in (
        "MP2020",
        "MATERIALSPROJECT2020",
    ):
        return MaterialsProject2020Compatibility()
    raise ValueError(
        f"unknown compatibility {compatibility!r}: use 'MP2020', None "
        "or a pymatgen Compatibility instance"
    )


def apply_corrections(
    entries: Iterable[ComputedEntry],
    compatibility: str | Compatibility | None = "MP2020",
    *,
    inplace: bool = False,
    source: str = "",
) -> EntryReport:
    """Apply an energy correction scheme exactly once; report refused entries.

    Runs ``compatibility.process_entries(entries, clean=True)``: ``clean=True``
    first removes every existing energy adjustment, so the result does not depend
    on whether the input was corrected already, and applying it twice changes
    nothing.  Entries the scheme refuses (wrong run type, POTCAR mismatch, ...) are
    returned in ``rejected`` with the scheme's message, not silently dropped.

    Parameters
    ----------
    entries
        ComputedEntry / ComputedStructureEntry objects.
    compatibility
        ``"MP2020"`` (``MaterialsProject2020Compatibility()``), a pymatgen
        ``Compatibility`` instance, or ``None`` to keep the entries as they are.
    inplace
        Modify the given entries instead of deep copies.
    source
        Prefix of the rejection sources (e.g. the file name).
    """
    from pymatgen.entries.compatibility import CompatibilityError

    entries = list(entries)
    scheme = _compatibility(compatibility)
    if scheme is None:
        return EntryReport(entries)
    if not inplace:
        entries = copy.deepcopy(entries)
    with warnings.catch_warnings():
        # MP2020 warns for every entry whose oxidation states it cannot guess; the
        # fallback it then uses is the documented MP behaviour, not a problem.
        warnings.filterwarnings("ignore", message="Failed to guess oxidation states")
        warnings.filterwarnings(
            "ignore", category=UserWarning, module="pymatgen.entries.compatibility"
        )
        processed = scheme.process_entries(
            entries, clean=True, inplace=True, on_error="ignore"
        )
        report = EntryReport(processed)
        kept = {id(e) for e in processed}
        for i, entry in enumerate(entries):
            if id(entry) in kept:
                continue
            try:
                scheme.get_adjustments(entry)
                reason = "discarded: conflicting energy adjustment"
            except CompatibilityError as exc:
                reason = str(exc)
            name = entry.entry_id or f"[{i}]"
            report.reject(
                f"{source}:{name}" if source else str(name),
                f"{type(scheme).__name__}: {reason}",
                "incompatible",
            )
    return report


def _entries_in_json(
    path: Path, label: str, allowed: frozenset[str] | None, report: EntryReport
) -> None:
    """Append the entries of one JSON file within ``allowed`` (reject the rest)."""
    try:
        objects = list(_flatten_json(_load_json(path)))
    except Exception as exc:
        report.reject(label, _why(exc))
        return
    for i, obj in enumerate(objects):
        try:
            entry = _as_entry(obj)
        except Exception as exc:
            report.reject(f"{label}[{i}]", f"unreadable entry: {_why(exc)}")
            continue
        if entry is None:
            report.reject(
                f"{label}[{i}]",
                f"not a computed entry ({type(obj).__name__})",
                "not an entry",
            )
        elif extra := _outside(_symbols(entry.composition), allowed):
            report.reject(
                f"{label}:{entry.entry_id or i}",
                f"elements {extra} outside chemistry",
                "outside chemistry",
            )
        else:
            report.append(entry)


def load_entries(
    path: Path | str,
    compatibility: str | Compatibility | None = "MP2020",
    *,
    elements: Iterable[str] | str | None = None,
    require_structure: bool = True,
) -> EntryReport:
    """Load reference entries (energies for the hull) from a file or folder.

    * MP ``ComputedStructureEntry`` JSON (``.json``/``.json.gz``, a single entry or a
      list; a folder: every such file, sorted).  With ``compatibility="MP2020"`` the
      MP2020 corrections are applied exactly once (see :func:`apply_corrections`:
      existing adjustments are cleaned first, so re-applying is idempotent); entries
      the scheme refuses are reported in ``rejected``.  ``compatibility=None`` keeps
      the entries, and their stored adjustments, as they are.
    * The GNoME layout (see :func:`load_structures`): one ``ComputedStructureEntry``
      per row with ``entry_id = MaterialId``, the CIF structure and the energy of
      the ``Corrected Energy`` column (total energy of the ``NSites`` cell, rescaled
      if the CIF cell differs).  GNoME's energies are already MP2020-compatible
      corrected, and the raw energy, run type and POTCARs needed to recompute the
      corrections are not published, so ``compatibility`` is not applied to them
      (``uncorrected_energy`` equals ``energy``; ``data["corrections"]`` says so).

    Parameters
    ----------
    path
        JSON file, folder of JSON files, or GNoME folder / summary CSV.
    compatibility
        ``"MP2020"``, a pymatgen ``Compatibility`` instance or ``None``.
    elements
        Keep only entries whose elements are a subset (others are rejected as
        ``"outside chemistry"``).
    require_structure
        GNoME rows without a CIF are rejected if true; if false they become plain
        ``ComputedEntry`` objects from the ``Composition`` column (enough for a
        hull; the 455 MB ``by_id.zip`` is then not needed).

    Returns
    -------
    EntryReport
        The list of entries, with ``rejected`` ``(source, reason)`` pairs.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"entry source not found: {path}")
    allowed = _normalize_elements(elements)
    report = EntryReport()
    if (summary := _gnome_summary(path)) is not None:
        for material_id, row, structure in _gnome_rows(
            summary, allowed, report, want_structure=require_structure
        ):
            try:
                report.append(_gnome_entry(material_id, row, structure))
            except ValueError as exc:
                kind = "missing" if str(exc).startswith("no ") else "unreadable"
                report.reject(f"gnome:{material_id}", str(exc), kind)
        logger.info("%s: %s (GNoME energies used as corrected)", path, report.summary())
        return report

    files = (
        [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    )
    for file in files:
        label = file.name if file == path else file.relative_to(path).as_posix()
        if file.name.lower().endswith(_ENTRY_SUFFIXES):
            found = EntryReport()
            _entries_in_json(file, label, allowed, found)
            corrected = apply_corrections(
                found, compatibility, inplace=True, source=label
            )
            found.clear()  # keep found's rejections, take the corrected entries
            found.merge(corrected)
            report.merge(found)
        elif file == path:
            report.reject(label, "not an entry file (.json, .json.gz) or GNoME layout")
        else:
            report.skipped.append(label)
    logger.info("%s: %s", path, report.summary())
    return report
