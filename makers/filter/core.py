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


def to_cueq(model: torch.nn.Module, device: str = "cpu") -> torch.nn.Module:
    """The same MACE model on cuEquivariance kernels (MACE's own converter).

    Energies are unchanged (1.2e-8 eV/atom measured). Without the CUDA ops
    (``cuequivariance-ops-torch-cu12``/``-cu13``) cuEquivariance falls back to a
    naive torch implementation: on this CPU the conversion took 10-13 s per model
    and inference was 2.4-2.8x slower (``benchmarks/filter_throughput.py --cueq``),
    so it is for a GPU only.
    """
    try:
        import cuequivariance_torch  # noqa: F401
        from mace.cli.convert_e3nn_cueq import run
    except ImportError as err:
        raise RuntimeError(
            "filter.cueq needs cuequivariance-torch, and on a GPU "
            "cuequivariance-ops-torch-cu12 (or -cu13) for its kernels; install them "
            "or set filter.cueq: false") from err
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    with _torch_default_dtype(next(model.parameters()).dtype):
        converted = run(model, device=kind).to(device)
    converted.eval()
    for param in converted.parameters():
        param.requires_grad_(False)
    return converted


def load_models(
    paths: Sequence[Path], device: str = "cpu", dtype: str | None = None,
    cueq: bool = False,
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
    cueq : bool
        Run the models on cuEquivariance kernels (:func:`to_cueq`).

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
        models.append(to_cueq(model, device) if cueq else model)
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


#: Structures per batch when ``batch_size`` is None: small batches on a CPU (the
#: edge budget rules there), large ones on a GPU, where out-of-memory splitting
#: (:class:`_Evaluator`) bounds them by the card's memory.
DEFAULT_BATCH_SIZE = {"cpu": 32, "cuda": 1024}

#: The keys a MACE model reads for energy inference (what graphs.assemble builds).
_MODEL_KEYS = ("positions", "node_attrs", "edge_index", "shifts", "unit_shifts",
               "cell", "batch", "ptr", "head")


def split_batch(batch: dict[str, torch.Tensor], k: int,
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a model input into its first ``k`` graphs and the rest."""
    ptr = batch["ptr"]
    cut = int(ptr[k])
    n_graphs = len(ptr) - 1
    first_edges = batch["batch"][batch["edge_index"][0]] < k
    second_edges = ~first_edges
    a = {
        "positions": batch["positions"][:cut],
        "node_attrs": batch["node_attrs"][:cut],
        "edge_index": batch["edge_index"][:, first_edges],
        "shifts": batch["shifts"][first_edges],
        "unit_shifts": batch["unit_shifts"][first_edges],
        "cell": batch["cell"][: 3 * k],
        "batch": batch["batch"][:cut],
        "ptr": ptr[: k + 1],
        "head": batch["head"][:k],
    }
    b = {
        "positions": batch["positions"][cut:],
        "node_attrs": batch["node_attrs"][cut:],
        "edge_index": batch["edge_index"][:, second_edges] - cut,
        "shifts": batch["shifts"][second_edges],
        "unit_shifts": batch["unit_shifts"][second_edges],
        "cell": batch["cell"][3 * k: 3 * n_graphs],
        "batch": batch["batch"][cut:] - k,
        "ptr": ptr[k:] - cut,
        "head": batch["head"][k:],
    }
    return a, b


class _Evaluator:
    """Energies of a batch under some ensemble members; a batch that runs out of
    device memory is split in two and retried, never fatal.

    After an out-of-memory error at ``E`` edges, later batches above ``E / 2``
    edges are split before they are tried (the budget learnt from the card).  A
    single structure that does not fit raises ``RuntimeError`` naming its size.
    """

    def __init__(self, models: Sequence[torch.nn.Module], members: Sequence[int],
                 device: str):
        self.models = models
        self.members = list(members)
        self.device = str(device)
        self.max_edges: int | None = None
        self.splits = 0

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(len(members), n_graphs)`` total energies, on the batch's device (not
        waited for: the caller copies them once the next batch is queued)."""
        import torch

        n_graphs = len(batch["ptr"]) - 1
        n_edges = int(batch["edge_index"].shape[1])
        if n_graphs > 1 and self.max_edges is not None and n_edges > self.max_edges:
            return self._halves(batch, n_graphs)
        try:
            return self._run(batch)
        except torch.OutOfMemoryError as err:
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            if n_graphs == 1:
                raise RuntimeError(
                    f"one structure of {int(batch['ptr'][1])} atoms and {n_edges} "
                    f"edges does not fit in the memory of {self.device}: {err}",
                ) from err
            self.max_edges = max(1, n_edges // 2)
            self.splits += 1
            logger.warning("out of memory at %d structures, %d edges on %s: split "
                           "and retried; batches now stay under %d edges",
                           n_graphs, n_edges, self.device, self.max_edges)
            return self._halves(batch, n_graphs)

    def _halves(self, batch: dict[str, torch.Tensor], n_graphs: int) -> torch.Tensor:
        import torch

        a, b = split_batch(batch, n_graphs // 2)
        return torch.cat([self(a), self(b)], dim=1)

    def _run(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch

        energies = []
        for i in self.members:
            # Members get their own dict: a model may add or replace entries of
            # its input (the tensors themselves are shared).
            with torch.inference_mode():
                result = self.models[i](
                    dict(batch),
                    training=False,
                    compute_force=False,
                    compute_virials=False,
                    compute_stress=False,
                )
                energies.append(result["energy"].detach())
        return torch.stack(energies)


def _store(out: np.ndarray, members: list[int], start: int,
           energies: torch.Tensor) -> None:
    import torch

    out[members, start : start + energies.shape[1]] = energies.to(
        "cpu", torch.float64).numpy()


def predict_energies(
    models: Sequence[torch.nn.Module],
    structures: Sequence[Any],
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    max_edges: int | str | None = "auto",
    graphs: str = "auto",
) -> np.ndarray:
    """Energy per atom of every structure under every ensemble member.

    Each batch's graph is built once and evaluated by all members sharing that
    cutoff/element table; only energies are computed (no force/stress
    back-propagation), under ``torch.inference_mode``.  A batch that runs out of
    device memory is split and retried (:class:`_Evaluator`).

    Parameters
    ----------
    models : sequence of torch.nn.Module
        MACE models (see :func:`load_models`), already on ``device``.
    structures : sequence of pymatgen Structure or ase.Atoms
        Ordered, periodic structures with elements known to every model.
    batch_size : int or None
        Most structures per batch; ``None``: :data:`DEFAULT_BATCH_SIZE` for the
        device.
    device : str
        Torch device the batches are moved to.
    max_edges : int, None or "auto"
        Most graph edges (directed neighbour pairs) per batch; a structure
        with more edges is evaluated alone.  ``"auto"`` uses
        :data:`CPU_MAX_EDGES` on CPU and, elsewhere, no limit until the card
        runs out of memory (then half the edges of the batch that did not fit).
        ``None``: no limit.  Batching changes only the float summation order
        (~1e-7 eV/atom in float32).
    graphs : {"auto", "vesin", "matscipy", "torch", "mace"}
        How input graphs are built: ``vesin``/``matscipy`` search neighbours per
        structure on the CPU and assemble each batch directly, ``torch`` searches
        a whole batch at once on ``device`` (:mod:`flywheel.makers.filter.graphs`);
        ``mace`` builds one ``AtomicData`` per structure and collates (MACE's own
        pipeline, the reference); ``auto`` is ``torch`` on a GPU, else ``vesin``
        when installed, else ``matscipy``.  All give the same energies
        (tests/test_graphs.py).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_models, n_structures)``, float64, eV/atom.
    """
    import torch

    on_cpu = str(device).startswith("cpu")
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE["cpu" if on_cpu else "cuda"]
    if max_edges == "auto":
        max_edges = CPU_MAX_EDGES if on_cpu else None
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
            batches = ((int(b.num_graphs), {k: b[k] for k in _MODEL_KEYS})
                       for b in (c.to(device) for c in
                                 _batches(dataset, batch_size, max_edges)))
        else:
            from flywheel.makers.filter.graphs import default_backend, iter_batches

            backend = default_backend(device) if graphs == "auto" else graphs
            batches = iter_batches(
                atoms_list, r_max, zs, head=heads.index(head), dtype=dtype,
                backend=backend, batch_size=batch_size, max_edges=max_edges,
                device=device)
        evaluate = _Evaluator(models, members, device)
        with _torch_default_dtype(dtype):
            start = 0
            queued = None
            for n_graphs, batch in batches:
                # On a GPU the copy back waits for the device: it is done for the
                # previous batch after this one is queued, so the CPU prepares the
                # next batch while the device computes.
                energies = evaluate(batch)
                if queued is not None:
                    _store(out, members, *queued)
                queued = (start, energies)
                start += n_graphs
            if queued is not None:
                _store(out, members, *queued)
        if evaluate.splits:
            logger.info("%d out-of-memory splits on %s; largest batch that fit: %s "
                        "edges", evaluate.splits, device, evaluate.max_edges)
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
