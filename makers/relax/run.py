"""The oracle seam: every oracle relaxation in flywheel goes through :func:`run_oracle`.

Callers look the function up at call time (``from flywheel.makers.relax import run``
then ``run.run_oracle(...)``) so a test can swap the oracle in one place.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.makers.relax.core import OracleResult, ResultSink, subsample_indices

if TYPE_CHECKING:
    from collections.abc import Callable

    from ase import Atoms
    from pymatgen.core import Structure

    from flywheel.config import OracleConfig

logger = logging.getLogger(__name__)


def _frames_from_trajectory(traj: Any, max_frames: int) -> list[Atoms]:
    """ASE frames labelled with the oracle's energies, forces and stresses."""
    from ase import Atoms

    frames = []
    for i in subsample_indices(len(traj), max_frames):
        props = traj.frame_properties[i]
        s = traj[i]
        # A bare Atoms: site properties carried over from pymatgen would be written
        # as extra extxyz columns that MACE does not expect.
        atoms = Atoms(numbers=list(s.atomic_numbers), positions=s.cart_coords,
                      cell=s.lattice.matrix, pbc=True)
        atoms.info["REF_energy"] = float(props["energy"])
        atoms.arrays["REF_forces"] = np.asarray(props["forces"], dtype=float)
        stress = props.get("stress")
        if stress is not None:
            atoms.info["REF_stress"] = np.asarray(stress, dtype=float)
        frames.append(atoms)
    return frames


@lru_cache(maxsize=4)
def _forcefield_maker(force_field: str, relax_cell: bool, steps: int, fmax: float,
                      model_name: str | None = None):
    """One atomate2 maker per setting and process: the maker caches its calculator, so
    a worker running many oracle jobs loads the model once (measured in
    benchmarks/orchestration.py). ``model_name`` picks other CHGNet weights shipped in
    the wheel (``"r2scan"`` for the fidelity re-check).
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    calculator_kwargs = {}
    if model_name is not None:
        from chgnet.model import CHGNet

        calculator_kwargs["model"] = CHGNet.load(model_name=model_name, verbose=False)
    return ForceFieldRelaxMaker(
        force_field_name=force_field,
        relax_cell=relax_cell,
        steps=steps,
        relax_kwargs={"fmax": fmax},
        store_trajectory="partial",
        calculator_kwargs=calculator_kwargs,
    )


def _relax_forcefield(
    structures: list[Structure], config: OracleConfig, force_field: str,
    on_result: Callable[[int, OracleResult], None] | None = None,
    model_name: str | None = None,
) -> list[OracleResult]:
    """Relax with atomate2's ForceFieldRelaxMaker, in this process, one structure at a
    time so that one failure does not lose the others.
    """
    maker = _forcefield_maker(force_field, config.relax_cell, config.steps, config.fmax,
                              model_name)
    done = ResultSink(on_result)

    for structure in structures:
        start = time.perf_counter()
        try:
            # make.original runs the job's function body without creating a job: the
            # relaxation belongs to the enclosing flywheel job.
            doc = maker.make.original(maker, structure)
        except Exception as err:
            logger.warning("oracle failed for %s: %s", structure.formula, err)
            done(OracleResult(None, error=f"{type(err).__name__}: {err}"[:500],
                              seconds=time.perf_counter() - start))
            continue
        traj = (doc.objects or {}).get("trajectory")
        frames = _frames_from_trajectory(traj, config.max_frames) if traj else []
        energy = float(doc.output.energy)
        if not np.isfinite(energy):
            done(OracleResult(None, error="non-finite energy"))
            continue
        done(
            OracleResult(
                structure=doc.output.structure,
                energy=energy,
                converged=bool(doc.is_force_converged),
                n_steps=int(doc.output.n_steps or len(doc.output.ionic_steps or [])),
                frames=frames,
                seconds=time.perf_counter() - start,
            )
        )
    return done.results


def run_oracle(
    structures: list[Structure],
    config: OracleConfig,
    on_result: Callable[[int, OracleResult], None] | None = None,
) -> list[OracleResult]:
    """Relax ``structures`` with the configured oracle; one result per structure.

    Failures are returned as results with ``error`` set, never raised, so that one bad
    candidate does not cost the rest of its chunk. ``on_result(i, result)`` is called as
    soon as structure ``i`` is done, so the caller can store it before the next one
    starts (a killed worker then loses at most the relaxation in progress).
    """
    if config.backend == "chgnet":
        return _relax_forcefield(structures, config, "CHGNet", on_result)
    if config.backend == "vasp":
        from flywheel.makers.relax.vasp import relax_vasp

        return relax_vasp(structures, config, on_result)
    if config.backend == "cp2k":
        from flywheel.makers.relax.cp2k import relax_cp2k

        return relax_cp2k(structures, config, on_result)
    raise ValueError(f"unknown oracle backend {config.backend!r}")


def run_recheck_oracle(
    structures: list[Structure],
    config: OracleConfig,
    on_result: Callable[[int, OracleResult], None] | None = None,
) -> list[OracleResult]:
    """The next rung of the fidelity ladder, r²SCAN, for the configured backend.

    ``vasp``: atomate2's ``MPMetaGGADoubleRelaxStaticMaker`` (PBEsol pre-relax, r²SCAN
    relax and static; no MP2020 correction). ``chgnet``: the r²SCAN-trained CHGNet
    weights shipped in the chgnet wheel, through the same atomate2 force-field maker.
    """
    if config.backend == "chgnet":
        return _relax_forcefield(structures, config, "CHGNet", on_result,
                                 model_name="r2scan")
    if config.backend == "vasp":
        from flywheel.makers.relax.vasp import relax_vasp

        return relax_vasp(structures, config, on_result, fidelity="r2scan")
    raise ValueError(f"no r2SCAN re-check for oracle backend {config.backend!r}")
