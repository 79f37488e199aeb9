"""MLIP pre-relaxation of candidates before the ensemble scores them (pure functions).

Generated candidates (substitutions, prototypes, random crystals) sit far from a local
minimum: their lattices are scaled by rule of thumb and their atoms are where a parent
or pyxtal put them.  A few dozen FIRE steps with a universal potential (CHGNet) or the
campaign's own MACE model move them towards the nearest minimum, so that the ensemble
scores (and the oracle starts from) something closer to what the oracle will find.

Every structure gets its own ASE optimizer (FIRE or BFGS) on a
:class:`ase.filters.FrechetCellFilter` (positions and cell), exactly as a one-by-one
``opt.run(fmax, steps)`` would; the optimizers are advanced in *lockstep* so that the
energies, forces and stresses of all unfinished structures are evaluated together by
one batched model call per step (:func:`chgnet_evaluator`, :func:`mace_evaluator`).
Any ASE calculator works as well, one structure at a time
(:func:`calculator_evaluator`, e.g. mace's ``MACECalculator``), and gives the same
trajectories.

A relaxation *fails*, keeping the input structure and a reason, when the model raises
(unknown element, isolated atom, ...), returns a non-finite energy, force or stress,
or the volume leaves ``[V0 / max_volume_ratio, V0 * max_volume_ratio]``.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    import torch
    from ase import Atoms
    from pymatgen.core import Structure

    #: energy (eV, whole cell), forces (n, 3) eV/Å, stress (6,) Voigt eV/Å³ (ASE sign)
    Evaluation = tuple[float, np.ndarray, np.ndarray]
    Evaluator = Callable[[Sequence[Atoms]], list["Evaluation | Exception"]]

__all__ = [
    "PrerelaxResult",
    "calculator_evaluator",
    "chgnet_evaluator",
    "mace_evaluator",
    "prerelax_structures",
    "relax_lockstep",
]

logger = logging.getLogger(__name__)

#: Structures below this count relax without a progress bar.
PROGRESS_MIN = 20


@dataclass
class PrerelaxResult:
    """The outcome of pre-relaxing one structure."""

    structure: Structure | Atoms
    """The relaxed structure, or the input unchanged when the relaxation failed."""
    steps: int = 0
    """Optimizer steps taken."""
    converged: bool = False
    """Whether max force (and cell force) fell to ``fmax`` within the steps."""
    energy_initial: float = float("nan")
    """Model energy of the input (eV/atom)."""
    energy_final: float = float("nan")
    """Model energy of the returned structure (eV/atom)."""
    volume_ratio: float = 1.0
    """Final over initial volume."""
    error: str | None = None
    """Why the relaxation failed (None: it did not)."""
    seconds: float = 0.0
    """Wall time until this structure finished (lockstep: shared with the batch)."""

    @property
    def ok(self) -> bool:
        """The relaxation ran without failure."""
        return self.error is None

    @property
    def energy_change(self) -> float:
        """Final minus initial model energy (eV/atom; ≤ 0 for a successful FIRE)."""
        return self.energy_final - self.energy_initial

    def record(self, model: str) -> dict[str, Any]:
        """Return what a candidate document stores under ``prerelaxed``."""
        rec: dict[str, Any] = {"model": model, "steps": int(self.steps)}
        if self.ok:
            rec.update(
                energy_change=float(self.energy_change),
                energy_per_atom=float(self.energy_final),
                volume_ratio=float(self.volume_ratio),
                converged=bool(self.converged),
            )
        else:
            rec["error"] = self.error
        return rec


# --------------------------------------------------------------------- conversions
def _to_atoms(structure: Structure | Atoms) -> Atoms:
    from flywheel.makers.filter.core import _to_atoms as to_atoms

    return to_atoms(structure).copy()


def _back(original: Structure | Atoms, atoms: Atoms) -> Structure | Atoms:
    """Return ``original`` with the relaxed cell and positions.

    Species, site properties and the type (Structure or Atoms) are kept.
    """
    import ase

    if isinstance(original, ase.Atoms):
        out = original.copy()
        out.set_cell(atoms.cell[:], scale_atoms=False)
        out.set_positions(atoms.get_positions())
        return out
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice(np.array(atoms.cell[:])),
        original.species_and_occu,
        atoms.get_positions(),
        coords_are_cartesian=True,
        site_properties=original.site_properties or None,
        properties=dict(original.properties or {}),
    )


def _check(evaluation: Any) -> str | None:
    if isinstance(evaluation, Exception):
        return f"{type(evaluation).__name__}: {evaluation}"[:300]
    energy, forces, stress = evaluation
    if not np.isfinite(energy):
        return "non-finite energy"
    if not (np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))):
        return "non-finite forces or stress"
    return None


# ------------------------------------------------------------------ lockstep driver
def relax_lockstep(
    structures: Sequence[Structure | Atoms],
    evaluate: Evaluator,
    *,
    steps: int = 50,
    fmax: float = 0.1,
    optimizer: Literal["FIRE", "BFGS"] = "FIRE",
    relax_cell: bool = True,
    max_volume_ratio: float = 3.0,
    max_active: int = 256,
    progress: bool | None = None,
    desc: str = "prerelax",
) -> list[PrerelaxResult]:
    """Relax every structure with its own ASE optimizer, evaluating them in batches.

    Up to ``max_active`` relaxations are in flight; each step evaluates all of them
    with one ``evaluate`` call, and a finished one is replaced by the next input
    (so batches stay full and memory stays bounded for large pools).

    Parameters
    ----------
    structures
        Ordered pymatgen Structures or ase Atoms (the inputs are not modified).
    evaluate
        Maps a list of Atoms to one ``(energy, forces, stress)`` or exception each.
    steps, fmax
        At most ``steps`` optimizer steps; stop earlier when the largest force
        (including the cell's, as :class:`~ase.filters.FrechetCellFilter` scales it)
        is below ``fmax`` (eV/Å).
    optimizer
        ``"FIRE"`` or ``"BFGS"`` (ASE's).
    relax_cell
        Relax the cell as well (FrechetCellFilter), else positions only.
    max_volume_ratio
        Fail a structure whose volume grows or shrinks by more than this factor.
    max_active
        Relaxations in flight at once.
    progress
        Show a tqdm bar (structures finished); ``None``: only for
        :data:`PROGRESS_MIN` structures or more.
    desc
        Label of the progress bar.

    Returns
    -------
    list of PrerelaxResult
        One per input, in order; a failed one carries the input structure.
    """
    import warnings

    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE
    from tqdm.auto import tqdm

    opt_class = {"FIRE": FIRE, "BFGS": BFGS}[optimizer]
    start = time.perf_counter()
    n = len(structures)
    results: list[PrerelaxResult | None] = [None] * n
    # per structure in flight: atoms, optimizer, initial volume, energy, steps taken
    state: dict[int, list[Any]] = {}
    bar = tqdm(total=n, desc=desc, unit="cell",
               disable=not (progress if progress is not None else n >= PROGRESS_MIN))

    def admit(i: int) -> None:
        atoms = _to_atoms(structures[i])
        atoms.calc = None
        target = FrechetCellFilter(atoms) if relax_cell else atoms
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = opt_class(target, logfile=None)
        opt.fmax = fmax  # what opt.run(fmax=...) sets before its first step
        state[i] = [atoms, opt, atoms.get_volume(), float("nan"), 0]

    def finish(i: int, converged: bool, error: str | None) -> None:
        atoms, _, v0, e0, step = state.pop(i)
        ok = error is None
        e_final = (atoms.calc.results["energy"] / len(atoms)) if ok else float("nan")
        results[i] = PrerelaxResult(
            structure=_back(structures[i], atoms) if ok else structures[i],
            steps=step, converged=converged, energy_initial=e0,
            energy_final=float(e_final), volume_ratio=atoms.get_volume() / v0,
            error=error, seconds=time.perf_counter() - start,
        )
        bar.update(1)

    pending = iter(range(n))
    try:
        while True:
            while len(state) < max_active and (i := next(pending, None)) is not None:
                try:
                    admit(i)
                except Exception as err:  # e.g. a disordered structure
                    results[i] = PrerelaxResult(
                        structure=structures[i], error=_check(err),
                        seconds=time.perf_counter() - start)
                    bar.update(1)
            if not state:
                break
            active = list(state)
            evaluations = evaluate([state[i][0] for i in active])
            if len(evaluations) != len(active):
                raise RuntimeError("evaluator must return one result per structure")
            for i, ev in zip(active, evaluations, strict=True):
                if (reason := _check(ev)) is not None:
                    finish(i, False, reason)
                    continue
                atoms, opt, v0, _, step = state[i]
                energy, forces, stress = ev
                atoms.calc = SinglePointCalculator(
                    atoms, energy=float(energy), free_energy=float(energy),
                    forces=np.asarray(forces, float), stress=np.asarray(stress, float),
                )
                if step == 0:
                    state[i][3] = float(energy) / len(atoms)
                if opt.converged():
                    finish(i, True, None)
                elif step == steps:
                    finish(i, False, None)
                else:
                    opt.step()
                    state[i][4] = step + 1
                    ratio = atoms.get_volume() / v0
                    if not 1 / max_volume_ratio <= ratio <= max_volume_ratio:
                        finish(i, False, f"volume changed by a factor {ratio:.3g} "
                                         f"(limit {max_volume_ratio:g})")
    finally:
        bar.close()
    return results  # type: ignore[return-value]


# ---------------------------------------------------------------------- evaluators
def _isolated(fn: Callable[[list[Atoms]], list[Evaluation]]) -> Evaluator:
    """Wrap a batch function so that one bad structure fails alone.

    If the whole batch raises, the structures are evaluated one at a time.
    """

    def evaluate(atoms_list: Sequence[Atoms]) -> list[Evaluation | Exception]:
        try:
            return list(fn(list(atoms_list)))
        except Exception as batch_error:
            if len(atoms_list) == 1:
                return [batch_error]
            logger.warning("batched evaluation of %d structures failed (%s: %s); "
                           "evaluating them one at a time", len(atoms_list),
                           type(batch_error).__name__, batch_error)
        out: list[Evaluation | Exception] = []
        for atoms in atoms_list:
            try:
                out.append(fn([atoms])[0])
            except Exception as err:
                out.append(err)
        return out

    return evaluate


def calculator_evaluator(calc: Any) -> Evaluator:
    """Evaluate with an ASE calculator, one structure at a time (the reference path)."""

    def fn(atoms_list: list[Atoms]) -> list[Evaluation]:
        out = []
        for atoms in atoms_list:
            a = atoms.copy()
            a.calc = calc
            out.append((float(a.get_potential_energy()), a.get_forces().copy(),
                        a.get_stress(voigt=True).copy()))
        return out

    return _isolated(fn)


@functools.lru_cache(maxsize=2)
def load_chgnet(device: str = "cpu") -> Any:
    """Load the pretrained CHGNet of the chgnet wheel (once per process and device)."""
    import contextlib
    import io

    from chgnet.model import CHGNet

    with contextlib.redirect_stdout(io.StringIO()):  # chgnet prints its version
        model = CHGNet.load(verbose=False, use_device=device)
    model.graph_converter.set_isolated_atom_response("error")
    return model


def chgnet_evaluator(
    model: Any = None, *, batch_size: int = 16, device: str = "cpu"
) -> Evaluator:
    """Batched CHGNet energies, forces and stresses (``CHGNet.predict_graph``).

    Graphs are built one structure at a time (an isolated atom fails only its own
    structure); the model then runs on ``batch_size`` graphs at once.  Units as
    ``CHGNetCalculator``: energy per atom times atoms, stress GPa → eV/Å³.
    """
    from ase import units
    from ase.stress import full_3x3_to_voigt_6_stress
    from pymatgen.io.ase import AseAtomsAdaptor

    model = load_chgnet(device) if model is None else model

    def fn(atoms_list: list[Atoms]) -> list[Evaluation | Exception]:
        out: list[Any] = [None] * len(atoms_list)
        graphs, where = [], []
        for i, atoms in enumerate(atoms_list):
            try:
                graphs.append(
                    model.graph_converter(AseAtomsAdaptor.get_structure(atoms))
                )
                where.append(i)
            except Exception as err:
                out[i] = err
        if graphs:
            preds = model.predict_graph(
                graphs, task="efs", batch_size=batch_size, return_crystal_feas=False
            )
            if isinstance(preds, dict):
                preds = [preds]
            for i, p in zip(where, preds, strict=True):
                n = len(atoms_list[i]) if model.is_intensive else 1
                stress = np.asarray(p["s"], float) * units.GPa
                if stress.shape == (3, 3):
                    stress = full_3x3_to_voigt_6_stress(stress)
                out[i] = (float(p["e"]) * n, np.asarray(p["f"], float), stress)
        return out

    return _isolated(fn)


def mace_evaluator(
    model: torch.nn.Module, *, batch_size: int = 16, device: str = "cpu",
    max_edges: int | str | None = "auto",
) -> Evaluator:
    """Batched MACE energies, forces and stresses of one model.

    Same graphs and edge-budgeted batches as
    :func:`flywheel.makers.filter.core.predict_energies` (MACE's own data pipeline;
    ``max_edges="auto"``: ``CPU_MAX_EDGES`` on CPU, no limit elsewhere), evaluated
    with ``compute_force`` and ``compute_stress``; results equal
    ``MACECalculator``'s to float round-off.
    """
    import torch
    from ase.stress import full_3x3_to_voigt_6_stress

    from flywheel.makers.filter.core import (
        CPU_MAX_EDGES,
        _batches,
        _GraphDataset,
        _model_key,
        _pick_head,
        _torch_default_dtype,
    )

    if max_edges == "auto":
        max_edges = CPU_MAX_EDGES if str(device).startswith("cpu") else None

    r_max, zs, dtype_name = _model_key(model)
    dtype = getattr(torch, dtype_name.removeprefix("torch."))
    heads = list(getattr(model, "heads", None) or ["Default"])
    head = _pick_head(heads)

    def fn(atoms_list: list[Atoms]) -> list[Evaluation]:
        dataset = _GraphDataset(atoms_list, r_max, zs, heads, head)
        out: list[Evaluation] = []
        with _torch_default_dtype(dtype):
            for batch in _batches(dataset, batch_size, max_edges):
                batch = batch.to(device)
                result = model(dict(batch.to_dict()), training=False,
                               compute_force=True, compute_stress=True)
                energy = result["energy"].detach().to("cpu", torch.float64).numpy()
                forces = result["forces"].detach().to("cpu", torch.float64).numpy()
                stress = result["stress"].detach().to("cpu", torch.float64).numpy()
                ptr = batch.ptr.cpu().numpy()
                for g in range(len(energy)):
                    out.append((float(energy[g]), forces[ptr[g] : ptr[g + 1]],
                                full_3x3_to_voigt_6_stress(stress[g])))
        return out

    return _isolated(fn)


# ------------------------------------------------------------------------ front end
def prerelax_structures(
    structures: Sequence[Structure | Atoms],
    model: Literal["chgnet", "mace"],
    *,
    mace_model: torch.nn.Module | Path | str | None = None,
    steps: int = 50,
    fmax: float = 0.1,
    optimizer: Literal["FIRE", "BFGS"] = "FIRE",
    batch_size: int | None = None,
    device: str = "cpu",
    max_volume_ratio: float = 3.0,
    progress: bool | None = None,
) -> list[PrerelaxResult]:
    """Pre-relax ``structures`` with CHGNet or a MACE model (module docstring).

    Parameters
    ----------
    structures
        Ordered structures.
    model
        ``"chgnet"`` (the pretrained weights shipped in the chgnet wheel) or
        ``"mace"`` (``mace_model``: a loaded model or a ``.model`` file).
    mace_model
        The MACE model for ``model="mace"``.
    steps, fmax, optimizer, max_volume_ratio, progress
        See :func:`relax_lockstep`.
    batch_size
        Structures per batched model call (``None``: 16, on every device: forces
        and stresses make a relaxation step heavier than the filter's energies).
    device
        Torch device.

    Returns
    -------
    list of PrerelaxResult
        One per input, in order.
    """
    batch_size = batch_size or 16
    if model == "chgnet":
        evaluate = chgnet_evaluator(batch_size=batch_size, device=device)
    elif model == "mace":
        if mace_model is None:
            raise ValueError("model='mace' needs mace_model")
        if not hasattr(mace_model, "atomic_numbers"):
            from flywheel.makers.filter.core import load_models

            mace_model = load_models([mace_model], device)[0]
        evaluate = mace_evaluator(mace_model, batch_size=batch_size, device=device)
    else:
        raise ValueError(f"model must be 'chgnet' or 'mace', not {model!r}")
    start = time.perf_counter()
    results = relax_lockstep(
        structures, evaluate, steps=steps, fmax=fmax, optimizer=optimizer,
        max_volume_ratio=max_volume_ratio, progress=progress,
        desc=f"prerelax ({model})",
    )
    ok = [r for r in results if r.ok]
    logger.info(
        "prerelax %s: %d structures in %.1f s, %d failed, %d converged, "
        "mean energy change %.3f eV/atom",
        model, len(results), time.perf_counter() - start, len(results) - len(ok),
        sum(r.converged for r in ok),
        float(np.mean([r.energy_change for r in ok])) if ok else float("nan"),
    )
    return results
