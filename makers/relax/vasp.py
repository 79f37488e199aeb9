"""The VASP oracle: atomate2's Materials Project makers, run by custodian.

One candidate = one atomate2 flow (``MPGGADoubleRelaxStaticMaker``: two GGA/GGA+U
relaxations with MP's input sets, then a static), executed inside the flywheel relax job
with :func:`jobflow.run_locally` in its own directory. atomate2 writes the inputs,
custodian runs ``vasp_cmd`` under its error handlers and validators, and atomate2/emmet
parse the outputs into task documents. The final static becomes a
``ComputedStructureEntry`` to which the MP2020 compatibility scheme is applied **once**,
here; everything downstream (hull, filter, training labels) reads the corrected energy
that is stored, and nothing applies a correction again.

The r²SCAN fidelity (``fidelity="r2scan"``) uses ``MPMetaGGADoubleRelaxStaticMaker``
(PBEsol pre-relax, r²SCAN relax, r²SCAN static) and applies no correction: r²SCAN
energies are only compared with other r²SCAN energies (see ``flywheel.makers.recheck``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from emmet.core.tasks import TaskDoc
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    from flywheel.config import OracleConfig, VaspConfig
    from flywheel.makers.relax.core import OracleResult

logger = logging.getLogger(__name__)

# 1 kBar in eV/Å^3 (VASP reports stress in kBar, compressive positive).
KBAR_TO_EV_A3 = 1.0 / 1602.1766208


def custodian_handlers(names: list[str]) -> list:
    """Custodian VASP error handlers by class name (``custodian.vasp.handlers``)."""
    from custodian.vasp import handlers as mod

    out = []
    for name in names:
        cls = getattr(mod, name, None)
        if cls is None or not isinstance(cls, type):
            raise ValueError(
                f"oracle.vasp.handlers: {name!r} is not a handler in custodian.vasp.handlers"
            )
        out.append(cls())
    return out


def mp_flow_maker(vasp: VaspConfig, fidelity: str = "gga"):
    """The atomate2 MP maker for one candidate, with flywheel's run settings on every
    VASP job inside it.
    """
    from atomate2.vasp.flows.mp import (
        MPGGADoubleRelaxStaticMaker,
        MPMetaGGADoubleRelaxStaticMaker,
    )
    from atomate2.vasp.jobs.base import BaseVaspMaker

    maker = (
        MPMetaGGADoubleRelaxStaticMaker()
        if fidelity == "r2scan"
        else MPGGADoubleRelaxStaticMaker()
    )
    run_kwargs = {
        "vasp_cmd": vasp.vasp_cmd,
        "handlers": custodian_handlers(vasp.handlers),
        "max_errors": vasp.max_errors,
    }
    if vasp.gamma_vasp_cmd:
        run_kwargs["vasp_gamma_cmd"] = vasp.gamma_vasp_cmd
    return maker.update_kwargs(
        {
            "run_vasp_kwargs": run_kwargs,
            "write_input_set_kwargs": {"potcar_spec": vasp.potcar_spec},
        },
        class_filter=BaseVaspMaker,
        nested=True,
    )


def apply_mp2020(entry: ComputedStructureEntry) -> ComputedStructureEntry:
    """MP2020 corrections, applied once: ``clean=True`` drops any adjustment already on
    the entry first, so calling this twice gives the same energy.
    """
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    processed = MaterialsProject2020Compatibility().process_entries(
        [entry], clean=True, inplace=False
    )
    if not processed:
        raise ValueError(
            f"MP2020 compatibility rejected the entry for {entry.composition.reduced_formula} "
            f"(run type {entry.parameters.get('run_type')!r}, "
            f"POTCARs {entry.parameters.get('potcar_symbols')!r})"
        )
    return processed[0]


def frames_from_tasks(tasks: list[TaskDoc], correction: float, max_frames: int) -> list:
    """Training frames from every ionic step of every calculation, energies shifted by
    the entry's correction so the models learn the energies the hull uses.
    """
    from ase import Atoms

    from flywheel.makers.relax.core import subsample_indices

    steps = []
    for task in tasks:
        for calc in reversed(task.calcs_reversed or []):
            for step in calc.output.ionic_steps or []:
                if step.structure is None or step.forces is None:
                    continue
                steps.append(step)
    frames = []
    for i in subsample_indices(len(steps), max_frames):
        step = steps[i]
        s = step.structure
        atoms = Atoms(
            numbers=list(s.atomic_numbers),
            positions=s.cart_coords,
            cell=s.lattice.matrix,
            pbc=True,
        )
        e = step.e_0_energy if step.e_0_energy is not None else step.e_fr_energy
        atoms.info["REF_energy"] = float(e) + correction
        atoms.arrays["REF_forces"] = np.asarray(step.forces, dtype=float)
        if step.stress is not None:
            atoms.info["REF_stress"] = (
                -np.asarray(step.stress, dtype=float) * KBAR_TO_EV_A3
            )
        frames.append(atoms)
    return frames


def run_mp_flow(
    structure: Structure, vasp: VaspConfig, workdir: Path, fidelity: str = "gga"
) -> list[TaskDoc]:
    """Run the atomate2 MP flow for one structure; task documents in run order.

    Raises when any VASP job of the flow fails (custodian gave up, or the outputs did
    not parse), with the failing job's name.
    """
    from jobflow import JobStore, run_locally
    from maggma.stores import MemoryStore
    from pymatgen.core import SETTINGS

    if vasp.potcar_dir is not None:
        SETTINGS["PMG_VASP_PSP_DIR"] = str(vasp.potcar_dir)
    flow = mp_flow_maker(vasp, fidelity).make(structure)
    workdir.mkdir(parents=True, exist_ok=True)
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
    # raise_immediately: the first failing VASP job's own exception (custodian's
    # "unrecoverable error", a parse error) becomes this candidate's failure reason.
    responses = run_locally(
        flow,
        store=store,
        create_folders=True,
        root_dir=workdir,
        log=False,
        raise_immediately=True,
    )
    tasks = []
    for job in _jobs_in_order(flow):
        out = responses.get(job.uuid, {})
        resp = out.get(max(out)) if out else None
        if resp is None or resp.output is None:
            raise RuntimeError(f"VASP job {job.name!r} failed (see {workdir})")
        tasks.append(resp.output)
    # Run order (the flow's graph mixes a nested flow and a job): by completion time.
    return sorted(tasks, key=lambda t: str(t.completed_at))


def _jobs_in_order(flow) -> list:
    """The flow's jobs in execution (topological) order."""
    return [job for job, _ in flow.iterflow()]


def relax_vasp(
    structures: list[Structure],
    config: OracleConfig,
    on_result: Callable[[int, OracleResult], None] | None = None,
    fidelity: str = "gga",
    workdir: Path | None = None,
) -> list[OracleResult]:
    """Relax each structure with the atomate2 MP flow (one at a time; a failure is a
    result with ``error`` set, never an exception).
    """
    from flywheel.makers.relax.core import OracleResult, ResultSink

    root = Path(workdir or config.vasp.run_dir).resolve()
    done = ResultSink(on_result)

    for structure in structures:
        start = time.perf_counter()
        tag = (
            f"{time.strftime('%Y%m%d-%H%M%S')}-{structure.composition.reduced_formula}"
        )
        calc_dir = root / f"{tag}-{len(done.results)}"
        try:
            tasks = run_mp_flow(structure, config.vasp, calc_dir, fidelity)
            final = tasks[-1]
            entry = final.structure_entry
            raw = float(entry.uncorrected_energy)
            if fidelity == "gga":
                entry = apply_mp2020(entry)
            correction = float(entry.correction)
            details = {
                "dir_name": str(calc_dir),
                "fidelity": fidelity,
                "calc_types": [str(t.calc_type) for t in tasks],
                "run_type": str(final.calcs_reversed[0].run_type),
                "uncorrected_energy": raw,
                "correction": correction,
                "energy_adjustments": [a.as_dict() for a in entry.energy_adjustments],
                "custodian_corrections": [
                    c.get("errors")
                    for t in tasks
                    for cdoc in (t.custodian or [])
                    for c in (cdoc.corrections or [])
                ],
                "entry": entry.as_dict(),
            }
            frames = frames_from_tasks(tasks, correction, config.max_frames)
            done(
                OracleResult(
                    structure=final.output.structure,
                    energy=float(entry.energy),
                    converged=all(
                        getattr(t.state, "value", t.state) == "successful"
                        for t in tasks
                    ),
                    n_steps=sum(
                        len(c.output.ionic_steps or [])
                        for t in tasks
                        for c in (t.calcs_reversed or [])
                    ),
                    frames=frames,
                    seconds=time.perf_counter() - start,
                    details=details,
                )
            )
        except Exception as err:  # one candidate's failure must not cost the chunk
            logger.warning("VASP oracle failed for %s: %s", structure.formula, err)
            done(
                OracleResult(
                    None,
                    error=f"{type(err).__name__}: {err}"[:500],
                    seconds=time.perf_counter() - start,
                    details={"dir_name": str(calc_dir)},
                )
            )
    return done.results
