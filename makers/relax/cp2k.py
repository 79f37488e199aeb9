"""The CP2K oracle: real open-source DFT (Debian packages ``cp2k`` and its data).

Each structure is relaxed by an ASE optimizer (``BFGS`` on a ``FrechetCellFilter``, the
same cell treatment and ``fmax`` criterion as the CHGNet oracle) with forces, energies
and stresses from CP2K's Quickstep (GPW, GTH pseudopotentials, MOLOPT basis sets, PBE),
driven through ``cp2k_shell`` by ``ase.calculators.cp2k.CP2K``. One ``cp2k_shell``
process per structure, started in its own temporary directory, stopped and removed when
the relaxation ends.

Why not atomate2's CP2K makers
------------------------------
The project uses atomate2 where it fits; for CP2K it was tried first and measured on the
2-atom Si test cell (a = 5.55 Å, PBE, DZVP-MOLOPT-SR-GTH, 150 Ry, 5x5x5 k-points,
2 cores, ``OMP_NUM_THREADS=1``, CP2K 2023.1 from Debian), running
``atomate2.cp2k.jobs.core.CellOptMaker`` in-process (``maker.make.original``) with
basis/potential objects parsed from ``/usr/share/cp2k`` (so no ``PMG_CP2K_DATA_DIR`` is
needed) and a light ``CellOptSetGenerator``:

* Non-spin-polarised (RKS) runs cannot be parsed: CP2K finishes, then
  ``TaskDocument.from_directory`` raises in
  ``atomate2/cp2k/schemas/calculation.py::CalculationInput.cleanup_dft``
  (``if any(v.upper() == "UKS" for v in dft.values())``)::

      AttributeError: 'int' object has no attribute 'upper'

  Only UKS (atomate2's default, ``UKS True``) parses, because the first value is
  then the string ``"UKS"``. That doubles the SCF cost of every non-magnetic candidate.
* CP2K's own ``CELL_OPT`` (which the maker runs) steps in the cell matrix, not in
  strain: its first BFGS step broke the cubic symmetry of the Si cell (angles 59.6°,
  shear stress up to 6.4 kbar), and its convergence test checks the pressure (trace)
  and the cell-matrix gradient only. UKS, 5x5x5 k-points: with ``MAX_FORCE`` 9.7e-4
  Ha/bohr (= 0.05 eV/Å) and a 1 kbar pressure tolerance it stopped after 9 force
  evaluations, 80 s, with 3.6 kbar of shear stress left; with CP2K's default
  ``MAX_FORCE`` 4.5e-4, 11 evaluations, 110 s, 1.1 kbar left.
* With atomate2's default precision (``EPS_PGF_ORB 1e-16``, Broyden alpha 0.05) and a
  2x2x2 Monkhorst-Pack grid the same relaxation took 552 s (29 force evaluations) and
  ended in a spurious rhombohedral cell: shifted even grids break fcc symmetry, so
  this module only makes odd, Γ-centred grids.
* The same cell through this module (RKS, 5x5x5): 2 BFGS steps, 3 force evaluations,
  cubic symmetry kept, 0.17 GPa isotropic stress left (within ``fmax``), 22 s; final
  energy -214.17323 eV against atomate2's -214.17257 (loose) and -214.17336 (tight).

So the oracle uses ASE's CP2K calculator. Custodian has no role here: CP2K runs as a
long-lived shell, and the failures it would handle (unconverged SCF, crashes) are
checked below and recorded as failed oracle results.

Units: CP2K's stress has the opposite sign to ASE's; ``ase.calculators.cp2k``
converts it to ASE's convention (eV/Å³, positive = tensile), which the frames keep, as
Voigt-6 like the CHGNet oracle's frames.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from ase import Atoms
    from pymatgen.core import Structure

    from flywheel.config import OracleConfig
    from flywheel.makers.relax.core import OracleResult

logger = logging.getLogger(__name__)

DEBIAN_DATA_DIR = "/usr/share/cp2k"
INSTALL_HINT = "install the Debian package cp2k (apt-get install -y cp2k)"


@dataclass(frozen=True)
class Cp2kSettings:
    """How CP2K is run. The defaults are a production setting; :meth:`light` is the
    cheap setting the CI test uses.
    """

    command: str = "cp2k_shell"
    """The CP2K shell executable (Debian: ``cp2k_shell`` -> ``cp2k_shell.psmp``). On a
    cluster e.g. ``srun -n 8 cp2k_shell.psmp`` (ASE talks to it over stdin/stdout)."""
    data_dir: str = DEBIAN_DATA_DIR
    """Where the basis-set and pseudopotential files are (Debian: /usr/share/cp2k)."""
    basis_set: str = "DZVP-MOLOPT-SR-GTH"
    """Basis set name, looked up per element in ``basis_file``."""
    basis_file: str = "BASIS_MOLOPT"
    """Basis set file (name in ``data_dir``, or an absolute path)."""
    potential_file: str = "GTH_POTENTIALS"
    """Pseudopotential file (name in ``data_dir``, or an absolute path)."""
    pseudo_potential: str = "GTH-PBE"
    """Pseudopotential family; the valence (``-qN``) is matched to the basis set's."""
    xc: str = "PBE"
    """Exchange-correlation functional (CP2K XC_FUNCTIONAL section name)."""
    cutoff: float = 400.0
    """Plane-wave cutoff of the finest grid (Ry)."""
    rel_cutoff: float = 50.0
    """Gaussian-to-grid mapping cutoff (Ry)."""
    kpoint_spacing: float = 0.25
    """Largest k-point spacing (Å⁻¹, 2π included, like VASP's KSPACING): divisions
    n_i = ceil(|b_i| / spacing), rounded up to odd so the Monkhorst-Pack grid is
    Γ-centred (shifted even grids break the symmetry of fcc/bcc/hexagonal cells).
    0 or a mesh of 1x1x1: Γ only."""
    uks: bool = False
    """Spin-polarised (unrestricted Kohn-Sham). Off by default: it doubles the cost,
    and measured here (CP2K 2023.1, k-points, ``MAGNETIZATION`` 0.6 or 3 in the atomic
    guess) bcc Fe still converged to the non-magnetic state, so UKS alone does not
    find magnetic ground states."""
    magnetization: float = 0.6
    """Initial moment per atom (CP2K KIND MAGNETIZATION) for the atomic guess when
    ``uks``."""
    smearing_kelvin: float | None = 500.0
    """Fermi-Dirac electronic temperature (K) for metals; None: fixed occupations
    (insulators only; faster)."""
    eps_scf: float = 1e-6
    """SCF convergence (CP2K EPS_SCF)."""
    max_scf: int = 100
    """SCF iterations per force evaluation; an unconverged SCF fails the relaxation."""
    mixing_alpha: float = 0.2
    """Broyden density-mixing parameter."""
    eps_default: float = 1e-10
    """CP2K QS EPS_DEFAULT (integral screening)."""
    omp_threads: int | None = None
    """OMP_NUM_THREADS for CP2K; None: inherit the worker's environment."""
    scratch_dir: str | None = None
    """Where the per-structure working directories are made (e.g. node-local scratch;
    ``$VARS`` and ``~`` are expanded); None: the system temporary directory."""
    keep_files: bool = False
    """Keep each working directory (for debugging) instead of removing it."""

    @classmethod
    def light(cls, **overrides: Any) -> Cp2kSettings:
        """The cheap setting of the CI test: 150 Ry, no smearing, 0.4 Å⁻¹ k-point
        spacing (5x5x5 for 2-atom Si). Good for insulators and for testing only.
        """
        base = cls(cutoff=150.0, rel_cutoff=40.0, kpoint_spacing=0.4, uks=False,
                   smearing_kelvin=None, mixing_alpha=0.3)
        return replace(base, **overrides)

    @classmethod
    def from_config(cls, config: Any) -> Cp2kSettings:
        """Settings from ``config.cp2k`` (a section or dict with these field names), or
        from flat ``cp2k_<field>`` attributes of ``config``; defaults for the rest.
        """
        names = {f.name for f in fields(cls)}
        section = getattr(config, "cp2k", None)
        if section is None:
            values = {n: getattr(config, f"cp2k_{n}") for n in names
                      if getattr(config, f"cp2k_{n}", None) is not None}
        else:
            if isinstance(section, Mapping):
                data = section
            elif hasattr(section, "model_dump"):
                data = section.model_dump()
            else:
                data = vars(section)
            values = {k: v for k, v in data.items() if k in names}
        for key in ("data_dir", "scratch_dir"):
            if values.get(key) is not None:
                values[key] = str(values[key])
        return cls(**values)

    def resolve(self, filename: str) -> Path:
        path = Path(filename)
        return path if path.is_absolute() else Path(self.data_dir) / path


# -- basis sets and pseudopotentials --------------------------------------------------

_HEADER = re.compile(r"^\s*([A-Z][a-z]?)\s+([A-Za-z].*)$")


@lru_cache(maxsize=8)
def _data_entries(path: str) -> dict[str, list[list[str]]]:
    """Element -> the name lists of each entry's header line in a CP2K data file."""
    entries: dict[str, list[list[str]]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.lstrip().startswith("#"):
                continue
            m = _HEADER.match(line)
            if m:
                entries.setdefault(m.group(1), []).append(m.group(2).split())
    return entries


def _valence(names: list[str]) -> int | None:
    for name in names:
        m = re.search(r"-q(\d+)$", name)
        if m:
            return int(m.group(1))
    return None


def basis_and_potential(
    element: str, settings: Cp2kSettings
) -> tuple[str, str, int | None]:
    """The basis set, the pseudopotential (same valence) and that valence (electrons per
    atom, if the names say) for ``element``.
    """
    basis_path = settings.resolve(settings.basis_file)
    pot_path = settings.resolve(settings.potential_file)
    for path in (basis_path, pot_path):
        if not path.is_file():
            raise FileNotFoundError(f"CP2K data file {path} not found: {INSTALL_HINT}")
    bases = [n for n in _data_entries(str(basis_path)).get(element, [])
             if settings.basis_set in n]
    if not bases:
        raise ValueError(
            f"no basis set {settings.basis_set} for {element} in {basis_path}"
        )
    q = _valence(bases[0])
    want = f"{settings.pseudo_potential}-q{q}" if q else settings.pseudo_potential
    for names in _data_entries(str(pot_path)).get(element, []):
        if want in names:
            return settings.basis_set, want, q or _valence(names)
    raise ValueError(f"no pseudopotential {want} for {element} in {pot_path}")


# -- input ----------------------------------------------------------------------------

def kpoint_mesh(cell: np.ndarray, spacing: float) -> tuple[int, int, int]:
    """Odd (Γ-centred) Monkhorst-Pack divisions with spacing at most ``spacing`` Å⁻¹."""
    if spacing <= 0:
        return (1, 1, 1)
    recip = 2 * math.pi * np.linalg.inv(np.asarray(cell, dtype=float)).T
    mesh = []
    for b in recip:
        n = max(1, math.ceil(np.linalg.norm(b) / spacing - 1e-9))
        mesh.append(n if n % 2 else n + 1)
    return tuple(mesh)


def input_template(elements: list[str], mesh: tuple[int, int, int],
                   settings: Cp2kSettings) -> tuple[str, dict[str, tuple[str, str]]]:
    """The CP2K input that ASE completes with cell, coordinates, cutoff, XC, files;
    and the basis set and pseudopotential of each element.
    """
    found = {el: basis_and_potential(el, settings) for el in sorted(set(elements))}
    kinds = {el: (basis, pot) for el, (basis, pot, _) in found.items()}
    # Empty bands for the smearing (CP2K 2023.1 aborts on ADDED_MOS -1): a third of
    # the occupied ones, at least 10; CP2K caps it at the basis size.
    n_occ = sum((found[el][2] or 8) for el in elements) / 2
    added_mos = max(10, math.ceil(n_occ / 3))
    s = settings
    kpoints = "" if mesh == (1, 1, 1) else f"""
    &KPOINTS
      SCHEME MONKHORST-PACK {mesh[0]} {mesh[1]} {mesh[2]}
      FULL_GRID .FALSE.
      SYMMETRY .FALSE.
    &END KPOINTS"""
    smear = "" if not s.smearing_kelvin else f"""
      ADDED_MOS {added_mos}
      &SMEAR ON
        METHOD FERMI_DIRAC
        ELECTRONIC_TEMPERATURE [K] {s.smearing_kelvin:g}
      &END SMEAR"""
    magnetization = (f"\n      MAGNETIZATION {s.magnetization:g}"
                     if s.uks and s.magnetization else "")
    kind_sections = "".join(f"""
    &KIND {el}
      BASIS_SET {basis}
      POTENTIAL {pot}{magnetization}
    &END KIND""" for el, (basis, pot) in kinds.items())
    text = f"""&FORCE_EVAL
  &DFT
    &QS
      EPS_DEFAULT {s.eps_default:.1e}
    &END QS
    &MGRID
      NGRIDS 4
      REL_CUTOFF {s.rel_cutoff:g}
    &END MGRID{kpoints}
    &SCF
      EPS_SCF {s.eps_scf:.1e}
      SCF_GUESS ATOMIC
      &DIAGONALIZATION
        ALGORITHM STANDARD
      &END DIAGONALIZATION
      &MIXING
        METHOD BROYDEN_MIXING
        ALPHA {s.mixing_alpha:g}
        NBROYDEN 8
      &END MIXING{smear}
    &END SCF
  &END DFT
  &SUBSYS{kind_sections}
  &END SUBSYS
&END FORCE_EVAL
"""
    return text, kinds


def executable_error(command: str) -> str | None:
    """Why ``command`` cannot run, or None."""
    try:
        words = shlex.split(command)
    except ValueError as err:
        return f"bad cp2k command {command!r}: {err}"
    if not words:
        return f"CP2K executable not found (empty command): {INSTALL_HINT}"
    # Skip launcher words and environment assignments: the CP2K binary is the first
    # word that names cp2k (srun/mpirun ... cp2k_shell.psmp), else the first word.
    exe = next((w for w in words if "cp2k" in Path(w).name), None)
    for word in [words[0]] + ([exe] if exe and exe != words[0] else []):
        if "=" in word and not word.startswith("/"):
            continue
        if shutil.which(word) is None:
            return f"CP2K executable {word!r} not found on PATH: {INSTALL_HINT}"
    return None


# -- relaxation -----------------------------------------------------------------------

def _scf_failures(out_file: Path) -> int:
    if not out_file.is_file():
        return 0
    return out_file.read_text(errors="replace").count("*** SCF run NOT converged ***")


def _start_calculator(command: str, template: str, settings: Cp2kSettings):
    """ASE's CP2K calculator on a new ``cp2k_shell`` process."""
    from ase.calculators.cp2k import CP2K
    from ase.units import Rydberg

    return CP2K(
        command=command,
        label="cp2k",  # relative: the shell writes cp2k.inp/.out in its directory
        basis_set=None,  # per element, in the template's KIND sections
        pseudo_potential=None,
        basis_set_file=str(settings.resolve(settings.basis_file)),
        potential_file=str(settings.resolve(settings.potential_file)),
        xc=settings.xc,
        cutoff=settings.cutoff * Rydberg,
        max_scf=settings.max_scf,
        uks=settings.uks,
        stress_tensor=True,
        poisson_solver=None,
        inp=template,
    )


def _relax_one(structure: Structure, config: OracleConfig,
               settings: Cp2kSettings) -> OracleResult:
    from ase import Atoms
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from pymatgen.io.ase import AseAtomsAdaptor

    from flywheel.makers.relax.core import OracleResult, subsample_indices

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                  pbc=True)
    mesh = kpoint_mesh(atoms.cell.array, settings.kpoint_spacing)
    template, kinds = input_template(atoms.get_chemical_symbols(), mesh, settings)

    scratch = None
    if settings.scratch_dir:  # $VARS and ~ expanded (e.g. /scratch/$USER)
        scratch = Path(os.path.expandvars(settings.scratch_dir)).expanduser()
        scratch.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-cp2k-", dir=scratch))
    threads = settings.omp_threads
    env = f"OMP_NUM_THREADS={int(threads)} " if threads else ""
    # The shell runs in the working directory (CP2K writes restart files to its cwd);
    # the Python process never changes directory.
    command = f"cd {shlex.quote(str(workdir))} && exec {env}{settings.command}"
    calc = None
    frames: list[Atoms] = []
    try:
        try:
            calc = _start_calculator(command, template, settings)
        except Exception as err:
            raise RuntimeError(f"cp2k shell {settings.command!r} did not start: "
                               f"{type(err).__name__}: {err}") from err
        atoms.calc = calc

        def record() -> None:
            res = calc.results
            frame = Atoms(numbers=atoms.numbers, positions=atoms.positions.copy(),
                          cell=atoms.cell.array.copy(), pbc=True)
            frame.info["REF_energy"] = float(res["energy"])
            frame.arrays["REF_forces"] = np.array(res["forces"], dtype=float)
            if "stress" in res:
                frame.info["REF_stress"] = np.array(res["stress"], dtype=float)
            frames.append(frame)

        target = FrechetCellFilter(atoms) if config.relax_cell else atoms
        opt = BFGS(target, logfile=None)
        opt.attach(record, interval=1)
        converged = bool(opt.run(fmax=config.fmax, steps=config.steps))
        energy = float(atoms.get_potential_energy())
        n_failed = _scf_failures(workdir / "cp2k.out")
        version = getattr(calc._shell, "version", None)
    finally:
        if calc is not None:
            with contextlib.suppress(Exception):  # the shell may already be gone
                calc.close()
        if settings.keep_files:
            logger.info("cp2k files kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if n_failed:
        raise RuntimeError(f"CP2K SCF did not converge in {n_failed} force "
                           f"evaluation(s) (max_scf={settings.max_scf})")
    if not np.isfinite(energy):
        raise RuntimeError("non-finite energy")
    kept = [frames[i] for i in subsample_indices(len(frames), config.max_frames)]
    details = {
        "code": "cp2k",
        "cp2k_shell_version": version,
        "kpoint_mesh": list(mesh),
        "kinds": {el: {"basis_set": b, "potential": p} for el, (b, p) in kinds.items()},
        "settings": asdict(settings),
        "force_evaluations": len(frames),
    }
    if settings.keep_files:
        details["directory"] = str(workdir)
    final = Atoms(numbers=atoms.numbers, positions=atoms.positions,
                  cell=atoms.cell.array, pbc=True)  # no calculator: bare structure
    return OracleResult(
        structure=AseAtomsAdaptor.get_structure(final),
        energy=energy,
        converged=converged,
        n_steps=int(opt.nsteps),
        frames=kept,
        details=details,
    )


def relax_cp2k(
    structures: list[Structure],
    config: OracleConfig,
    on_result: Callable[[int, OracleResult], None] | None = None,
    settings: Cp2kSettings | None = None,
) -> list[OracleResult]:
    """Relax each structure with CP2K, one at a time; failures become results with
    ``error`` set (never raised), as in :func:`flywheel.makers.relax.run.run_oracle`.

    ``settings``: how CP2K runs; default :meth:`Cp2kSettings.from_config` (``config``'s
    ``cp2k`` section, else the production defaults).
    """
    from flywheel.makers.relax.core import OracleResult, ResultSink

    settings = settings or Cp2kSettings.from_config(config)
    done = ResultSink(on_result)

    missing = executable_error(settings.command)
    for structure in structures:
        start = time.perf_counter()
        if missing:
            done(OracleResult(None, error=missing))
            continue
        try:
            result = _relax_one(structure, config, settings)
        except Exception as err:
            logger.warning("cp2k oracle failed for %s: %s", structure.formula, err)
            result = OracleResult(None, error=f"{type(err).__name__}: {err}"[:500])
        result.seconds = time.perf_counter() - start
        done(result)
    return done.results


def cp2k_available(
    command: str = "cp2k_shell", data_dir: str = DEBIAN_DATA_DIR
) -> bool:
    """Whether the CP2K shell and its data files are installed."""
    data = Path(data_dir, "BASIS_MOLOPT").is_file()
    return data and executable_error(command) is None
