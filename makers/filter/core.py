"""Pure (workflow-free) filtering helpers.

Section 1 -- ensemble prediction: batched MACE energies per atom for many
structures, plus a one-structure-at-a-time ASE reference implementation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


# =========================================================================== #
# 1. Ensemble prediction (MACE)
# =========================================================================== #
@contextlib.contextmanager
def _torch_default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Temporarily set torch's global default dtype (restored even on error).

    MACE builds its graph tensors with ``torch.get_default_dtype()``; mace's own
    context manager does not restore the dtype when an exception escapes.
    """
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _to_atoms(structure: Any) -> Any:
    """Convert a pymatgen ``Structure`` to periodic ``ase.Atoms``; Atoms pass."""
    import ase

    if isinstance(structure, ase.Atoms):
        return structure
    if not structure.is_ordered:
        raise ValueError("cannot predict energies of a disordered structure")
    return ase.Atoms(
        numbers=structure.atomic_numbers,
        positions=structure.cart_coords,
        cell=structure.lattice.matrix,
        pbc=True,
    )


def load_models(
    paths: Sequence[Path], device: str = "cpu", dtype: str | None = None
) -> list[torch.nn.Module]:
    """Load saved MACE models for inference.

    Parameters
    ----------
    paths : sequence of Path
        ``.model`` files (``torch.save``-d modules, as written by MACE).
    device : str
        Torch device to place the models on.
    dtype : {"float32", "float64"} or None
        Convert the weights to this dtype; ``None`` keeps the trained dtype.

    Returns
    -------
    list of torch.nn.Module
        Models in eval mode with gradients disabled on the parameters.
    """
    import mace
    import torch

    models = []
    for path in paths:
        model = torch.load(str(path), map_location=device, weights_only=False)
        if dtype == "float64":
            model = model.double()
        elif dtype == "float32":
            model = model.float()
        elif dtype is not None:
            raise ValueError(f"dtype must be 'float32', 'float64' or None, got {dtype}")
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        models.append(model)
    return models


def _model_key(model: torch.nn.Module) -> tuple[float, tuple[int, ...], str]:
    """Return what a model needs from its input graph: cutoff, elements, dtype."""
    dtype = str(next(model.parameters()).dtype)
    zs = tuple(int(z) for z in model.atomic_numbers)
    return float(model.r_max), zs, dtype


def _pick_head(heads: Sequence[str]) -> str:
    """Pick the head MACECalculator would use: "default" if present, else the first."""
    for head in heads:
        if head.lower() == "default":
            return head
    return heads[0]


class _GraphDataset:
    """Map-style dataset building MACE graphs lazily (one structure at a time).

    Lazy building keeps memory flat for large candidate pools; each graph is
    built once per (cutoff, element table) group and shared by its models.
    """

    def __init__(
        self,
        atoms_list: Sequence[Any],
        r_max: float,
        zs: Sequence[int],
        heads: list[str],
        head: str,
    ):
        from mace.tools.utils import AtomicNumberTable

        self.atoms_list = atoms_list
        self.r_max = r_max
        self.z_table = AtomicNumberTable(list(zs))
        self.heads = heads
        self.head = head
        self.allowed = set(zs)

    def __len__(self) -> int:
        return len(self.atoms_list)

    def __getitem__(self, index: int) -> Any:
        from mace import data as mace_data

        atoms = self.atoms_list[index]
        unknown = set(atoms.get_atomic_numbers().tolist()) - self.allowed
        if unknown:
            raise ValueError(
                f"structure {index} has elements {sorted(unknown)} the model "
                f"was not trained on (known: {sorted(self.allowed)})"
            )
        # Empty key specification: no labels are read, only the geometry.
        config = mace_data.config_from_atoms(
            atoms, key_specification=mace_data.KeySpecification(), head_name=self.head
        )
        return mace_data.AtomicData.from_config(
            config, z_table=self.z_table, cutoff=self.r_max, heads=self.heads
        )


#: Edges per batch on CPU.  Measured on one thread (16-channel L=0 model,
#: 12- and 54-atom Cu-Al cells): the time per structure is lowest for batches
#: of ~4k-16k edges and grows ~2.5x by 150k edges, where the intermediate
#: per-edge tensors no longer fit in cache.  GPUs want large batches instead.
CPU_MAX_EDGES = 12_000


def _batches(
    dataset: _GraphDataset, batch_size: int, max_edges: int | None
) -> Iterator[Any]:
    """Collate consecutive graphs into edge-budgeted batches.

    A batch holds at most ``batch_size`` graphs and ``max_edges`` edges; a
    single graph with more edges gets a batch of its own.
    """
    from mace.tools.torch_geometric.dataloader import Collater

    collate = Collater(follow_batch=[None], exclude_keys=[None])
    pending: list[Any] = []
    n_edges = 0
    for index in range(len(dataset)):
        graph = dataset[index]
        edges = int(graph.edge_index.shape[1])
        if pending and (
            len(pending) >= batch_size
            or (max_edges is not None and n_edges + edges > max_edges)
        ):
            yield collate(pending)
            pending, n_edges = [], 0
        pending.append(graph)
        n_edges += edges
    if pending:
        yield collate(pending)


def predict_energies(
    models: Sequence[torch.nn.Module],
    structures: Sequence[Any],
    *,
    batch_size: int = 32,
    device: str = "cpu",
    max_edges: int | str | None = "auto",
    graphs: str = "auto",
) -> np.ndarray:
    """Energy per atom of every structure under every ensemble member.

    Graphs are built once with MACE's own data pipeline and each batch is
    evaluated by all members sharing that cutoff/element table; only energies
    are computed (no force/stress back-propagation), under
    ``torch.inference_mode``.

    Parameters
    ----------
    models : sequence of torch.nn.Module
        MACE models (see :func:`load_models`), already on ``device``.
    structures : sequence of pymatgen Structure or ase.Atoms
        Ordered, periodic structures with elements known to every model.
    batch_size : int
        Most structures per batch.
    device : str
        Torch device the batches are moved to.
    max_edges : int, None or "auto"
        Most graph edges (directed neighbour pairs) per batch; a structure
        with more edges is evaluated alone.  ``"auto"`` uses
        :data:`CPU_MAX_EDGES` on CPU and no limit elsewhere; ``None``: no
        limit.  Batching changes only the float summation order (~1e-7
        eV/atom in float32).
    graphs : {"auto", "vesin", "matscipy", "mace"}
        How input graphs are built: ``vesin``/``matscipy`` assemble each batch
        directly (:mod:`flywheel.makers.filter.graphs`) with that neighbour list;
        ``mace`` builds one ``AtomicData`` per structure and collates (MACE's own
        pipeline, the reference); ``auto`` is ``vesin`` when installed, else
        ``matscipy``.  All give the same energies (tests/test_graphs.py).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_models, n_structures)``, float64, eV/atom.
    """
    import torch

    if max_edges == "auto":
        max_edges = CPU_MAX_EDGES if str(device).startswith("cpu") else None
    atoms_list = [_to_atoms(s) for s in structures]
    n_atoms = np.array([len(a) for a in atoms_list], dtype=float)
    out = np.full((len(models), len(atoms_list)), np.nan)
    if not atoms_list or not models:
        return out

    # Models with a different cutoff or element table need different graphs.
    groups: dict[tuple[float, tuple[int, ...], str], list[int]] = {}
    for i, model in enumerate(models):
        groups.setdefault(_model_key(model), []).append(i)
    if len(groups) > 1:
        logger.info("ensemble needs %d different input graphs", len(groups))

    for (r_max, zs, dtype_name), members in groups.items():
        dtype = getattr(torch, dtype_name.removeprefix("torch."))
        heads = list(getattr(models[members[0]], "heads", None) or ["Default"])
        head = _pick_head(heads)
        if graphs == "mace":
            dataset = _GraphDataset(atoms_list, r_max, zs, heads, head)
            batches = ((int(b.num_graphs), b.to(device).to_dict())
                       for b in _batches(dataset, batch_size, max_edges))
        else:
            from flywheel.makers.filter.graphs import (
                default_backend,
                iter_batches,
                to_device,
            )

            backend = default_backend() if graphs == "auto" else graphs
            batches = ((n, to_device(b, device)) for n, b in iter_batches(
                atoms_list, r_max, zs, head=heads.index(head), dtype=dtype,
                backend=backend, batch_size=batch_size, max_edges=max_edges))
        with _torch_default_dtype(dtype):
            start = 0
            for n_graphs, batch in batches:
                for i in members:
                    # Members get their own dict: a model may add or replace
                    # entries of its input (the tensors themselves are shared).
                    with torch.inference_mode():
                        result = models[i](
                            dict(batch),
                            training=False,
                            compute_force=False,
                            compute_virials=False,
                            compute_stress=False,
                        )
                        energy = result["energy"].to("cpu", torch.float64)
                    out[i, start : start + n_graphs] = energy.numpy()
                start += n_graphs
    return out / n_atoms[None, :]


def predict_energies_ase_loop(
    model_paths: Sequence[Path], structures: Sequence[Any], device: str = "cpu"
) -> np.ndarray:
    """Predict like :func:`predict_energies`, one ``MACECalculator`` call at a time.

    Slow (computes forces and stress it throws away, one graph per call);
    kept as the baseline for tests and benchmarks of :func:`predict_energies`.

    Parameters
    ----------
    model_paths : sequence of Path
        ``.model`` files.
    structures : sequence of pymatgen Structure or ase.Atoms
        Structures to evaluate.
    device : str
        Torch device.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_models, n_structures)``, eV/atom.
    """
    import torch
    from mace.calculators import MACECalculator

    previous = torch.get_default_dtype()
    try:
        calcs = [
            MACECalculator(model_paths=str(p), device=device, default_dtype="")
            for p in model_paths
        ]
        out = np.empty((len(calcs), len(structures)))
        for j, structure in enumerate(structures):
            atoms = _to_atoms(structure).copy()
            for i, calc in enumerate(calcs):
                atoms.calc = calc
                out[i, j] = atoms.get_potential_energy() / len(atoms)
    finally:
        torch.set_default_dtype(previous)
    return out
