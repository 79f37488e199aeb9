"""Batched MACE input graphs without per-structure Python objects (issue 11).

MACE's own pipeline builds one ``AtomicData`` per structure (a matscipy neighbour
list, a dozen small tensors, most of them training labels and weights the filter never
reads) and then collates them. :func:`build_batch` builds the one dictionary the
model reads for many structures at once:

* neighbour lists from ``vesin`` (C++, periodic, any cell shape) or matscipy (MACE's
  own :func:`mace.data.neighborhood.get_neighborhood`), one structure at a time on
  the CPU, or from :func:`torch_neighbour_lists`, a whole batch at once in torch on
  the device the model runs on (no per-structure Python work; the GPU path);
  all give the same edges (tests/test_graphs.py: 200 random cells, including cells
  smaller than the cutoff and strongly skewed ones);
* one concatenation per field for the whole batch (positions, one-hot species,
  offset edge indices, shifts, cells, graph index), in the model's dtype.

The result is what ``mace.tools.torch_geometric`` would collate from ``AtomicData``
for energy-only inference: the same keys, the same values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Neighbour-list backends: per structure on the CPU (``vesin``, ``matscipy``) or
#: per batch in torch on the model's device (``torch``).
BACKENDS = ("vesin", "matscipy", "torch")

#: Candidate pairs (atom pairs times periodic images) one pass of
#: :func:`torch_neighbour_lists` holds; a batch with more is done in chunks.  About
#: 120 bytes each at the peak: 2**21 is ~250 MB on a CPU, 2**25 ~4 GB on a GPU.
MAX_PAIRS = {"cpu": 1 << 21, "cuda": 1 << 25}


def default_backend(device: str = "cpu") -> str:
    """The neighbour list for ``device``.

    On a CPU ``vesin`` when importable, else ``matscipy`` (MACE depends on it): a
    C++ cell list per structure beats the batched torch search there (measured in
    benchmarks/filter_throughput.py).  On a GPU ``torch``: the search runs on the
    device for the whole batch, so one CPU core no longer bounds the rate.
    """
    if not str(device).startswith("cpu"):
        return "torch"
    try:
        import vesin  # noqa: F401
    except ImportError:
        return "matscipy"
    return "vesin"


def neighbour_list(positions: np.ndarray, cell: np.ndarray, cutoff: float,
                   backend: str = "vesin") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges of a fully periodic cell within ``cutoff`` Å.

    Returns ``sender``, ``receiver`` and integer ``unit_shifts`` (shape ``(n, 3)``)
    with the vector of edge ``k`` equal to
    ``positions[receiver[k]] - positions[sender[k]] + unit_shifts[k] @ cell``. An atom
    is its own neighbour only through a periodic image (MACE's convention).
    """
    positions = np.ascontiguousarray(positions, dtype=float)
    cell = np.ascontiguousarray(cell, dtype=float)
    if backend == "matscipy":
        from mace.data.neighborhood import get_neighborhood

        edge_index, _shifts, unit_shifts, _cell = get_neighborhood(
            positions=positions, cutoff=cutoff, pbc=(True, True, True),
            cell=cell.copy())
        return (edge_index[0], edge_index[1],
                np.asarray(unit_shifts).round().astype(np.int64))
    if backend == "vesin":
        from vesin import NeighborList

        i, j, s = NeighborList(cutoff=cutoff, full_list=True).compute(
            points=positions, box=cell, periodic=True, quantities="ijS")
        s = np.asarray(s, dtype=np.int64)
        keep = ~((i == j) & np.all(s == 0, axis=1))
        return (np.asarray(i, dtype=np.int64)[keep], np.asarray(j, dtype=np.int64)[keep],
                s[keep])
    raise ValueError(f"unknown neighbour-list backend {backend!r}; one of {BACKENDS}")


def torch_neighbour_lists(positions: torch.Tensor, cells: torch.Tensor,
                          counts: torch.Tensor, cutoff: float,
                          max_pairs: int | None = None,
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Directed edges within ``cutoff`` Å of many periodic cells at once, in torch.

    Parameters
    ----------
    positions : Tensor (n_atoms, 3)
        Cartesian positions of all structures, one after the other (float64
        recommended: the edges then equal matscipy's exactly).
    cells : Tensor (n_structures, 3, 3)
        Lattice vectors as rows.
    counts : Tensor (n_structures,)
        Atoms per structure.
    cutoff : float
        Å.
    max_pairs : int or None
        Most candidate pairs per pass (default :data:`MAX_PAIRS` for the device).

    Returns
    -------
    sender, receiver, unit_shifts
        Global atom indices (into ``positions``) and integer image shifts with
        ``vector = positions[receiver] - positions[sender] + unit_shifts @ cell``,
        the convention of :func:`neighbour_list`, for every structure.

    Each atom is wrapped into its cell; then, for a cell of widths ``h_k``, every
    image within ``ceil(cutoff / h_k)`` cells along each axis is tested.  That
    range is complete for any cell shape (a wrapped pair differs by less than one
    cell in fractional coordinates, and a vector shorter than the cutoff spans less
    than ``cutoff / h_k`` along axis ``k``), so skewed and sub-cutoff cells need no
    special case; they only test more images.  No Python loop runs per structure.
    """
    import torch

    dev = positions.device
    dtype = positions.dtype
    counts = counts.to(dev)
    n_struct = cells.shape[0]
    starts = torch.cumsum(counts, 0) - counts
    graph = torch.repeat_interleave(torch.arange(n_struct, device=dev), counts)
    frac = torch.einsum("ni,nij->nj", positions, torch.linalg.inv(cells)[graph])
    wrap = torch.floor(frac)
    wrapped = torch.einsum("ni,nij->nj", frac - wrap, cells[graph])
    wrap = wrap.long()
    areas = torch.linalg.cross(cells[:, [1, 2, 0]], cells[:, [2, 0, 1]], dim=-1)
    widths = torch.linalg.det(cells).abs()[:, None] / areas.norm(dim=-1)
    reach = torch.ceil(cutoff / widths).long()  # images tested along each axis
    span = 2 * reach + 1
    n_pairs = counts * counts * span.prod(dim=1)
    if max_pairs is None:
        max_pairs = MAX_PAIRS["cpu" if dev.type == "cpu" else "cuda"]
    # Structures in passes of at most max_pairs candidate pairs (one host sync).
    passes, first, held = [], 0, 0
    for b, pairs in enumerate(n_pairs.tolist()):
        if b > first and held + pairs > max_pairs:
            passes.append((first, b))
            first, held = b, 0
        held += pairs
    passes.append((first, n_struct))
    senders, receivers, shifts = [], [], []
    for b0, b1 in passes:
        pairs = n_pairs[b0:b1]
        s = torch.repeat_interleave(torch.arange(b0, b1, device=dev), pairs)
        local = (torch.arange(int(pairs.sum()), device=dev)
                 - (torch.cumsum(pairs, 0) - pairs)[s - b0])
        n = counts[s]
        image = local // (n * n)
        rest = local - image * n * n
        i = rest // n
        j = rest - i * n
        width = span[s]
        image_shift = torch.stack(
            [image % width[:, 0], (image // width[:, 0]) % width[:, 1],
             image // (width[:, 0] * width[:, 1])], dim=1) - reach[s]
        i = i + starts[s]
        j = j + starts[s]
        vec = wrapped[j] - wrapped[i] + torch.einsum(
            "ek,ekl->el", image_shift.to(dtype), cells[s])
        keep = ((vec * vec).sum(1) < cutoff * cutoff) & ~(
            (i == j) & (image_shift == 0).all(1))
        i, j = i[keep], j[keep]
        senders.append(i)
        receivers.append(j)
        # Back from the wrapped to the given positions.
        shifts.append(image_shift[keep] + wrap[i] - wrap[j])
    return torch.cat(senders), torch.cat(receivers), torch.cat(shifts)


def _element_index(zs: Sequence[int]) -> np.ndarray:
    index = np.full(119, -1, dtype=np.int64)
    index[np.asarray(zs, dtype=np.int64)] = np.arange(len(zs))
    return index


def structure_graph(atoms: Any, r_max: float, index: np.ndarray, k: int = 0,
                    backend: str = "vesin") -> tuple:
    """One structure's arrays: positions, element indices, edges, shifts, cell."""
    idx = _species(atoms.get_atomic_numbers(), index, k)
    p = atoms.get_positions()
    c = np.asarray(atoms.get_cell())
    s, r, u = neighbour_list(p, c, r_max, backend)
    return p, idx, s, r, u, c


def assemble(graphs: Sequence[tuple], n_species: int, head: int = 0,
             dtype: Any = None) -> dict[str, torch.Tensor]:
    """Concatenate :func:`structure_graph` outputs into one model input."""
    import torch

    dtype = dtype or torch.get_default_dtype()
    counts = [len(g[0]) for g in graphs]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n_graphs = len(graphs)
    counts_t = torch.as_tensor(counts, dtype=torch.long)
    unit = np.concatenate([g[4] for g in graphs])
    cells = np.stack([g[5] for g in graphs])
    # Per-edge Cartesian shift: its own graph's cell times the integer shift.
    graph_of_edge = np.repeat(np.arange(n_graphs), [len(g[4]) for g in graphs])
    cart = np.einsum("ek,ekl->el", unit.astype(float), cells[graph_of_edge])
    species_t = torch.as_tensor(np.concatenate([g[1] for g in graphs]),
                                dtype=torch.long)
    send = np.concatenate([g[2] + o for g, o in zip(graphs, starts, strict=True)])
    recv = np.concatenate([g[3] + o for g, o in zip(graphs, starts, strict=True)])
    return {
        "positions": torch.as_tensor(np.concatenate([g[0] for g in graphs]),
                                     dtype=dtype),
        "node_attrs": torch.nn.functional.one_hot(species_t, n_species).to(dtype),
        "edge_index": torch.as_tensor(np.stack([send, recv])),
        "shifts": torch.as_tensor(cart, dtype=dtype),
        "unit_shifts": torch.as_tensor(unit, dtype=dtype),
        "cell": torch.as_tensor(cells.reshape(-1, 3), dtype=dtype),
        "batch": torch.repeat_interleave(torch.arange(n_graphs), counts_t),
        "ptr": torch.cat([torch.zeros(1, dtype=torch.long), counts_t.cumsum(0)]),
        "head": torch.full((n_graphs,), head, dtype=torch.long),
    }


def device_batch(atoms_list: Sequence[Any], r_max: float, index: np.ndarray,
                 n_species: int, head: int = 0, dtype: Any = None, device: str = "cpu",
                 first: int = 0) -> dict[str, torch.Tensor]:
    """The model input for ``atoms_list`` with the neighbour search on ``device``.

    The CPU only concatenates positions, cells and element indices (one pinned copy
    to the device); :func:`torch_neighbour_lists` and every per-edge field are
    computed where the model runs.  ``first`` numbers the structures in errors.
    """
    import torch

    dtype = dtype or torch.get_default_dtype()
    numbers = [a.get_atomic_numbers() for a in atoms_list]
    species = index[np.concatenate(numbers)]
    if (species < 0).any():
        for k, z in enumerate(numbers):
            _species(z, index, first + k)
    counts = torch.as_tensor([len(z) for z in numbers], dtype=torch.long)
    host = {
        "positions": torch.as_tensor(np.concatenate(
            [a.get_positions() for a in atoms_list]), dtype=torch.float64),
        "cells": torch.as_tensor(np.stack(
            [np.asarray(a.get_cell()) for a in atoms_list]), dtype=torch.float64),
        "species": torch.as_tensor(species, dtype=torch.long),
        "counts": counts,
    }
    on = to_device(host, device)
    pos, cells = on["positions"], on["cells"]
    send, recv, unit = torch_neighbour_lists(pos, cells, on["counts"], r_max)
    graph = torch.repeat_interleave(
        torch.arange(len(numbers), device=pos.device), on["counts"])
    return {
        "positions": pos.to(dtype),
        "node_attrs": torch.nn.functional.one_hot(on["species"], n_species).to(dtype),
        "edge_index": torch.stack([send, recv]),
        "shifts": torch.einsum("ek,ekl->el", unit.to(torch.float64),
                               cells[graph[send]]).to(dtype),
        "unit_shifts": unit.to(dtype),
        "cell": cells.reshape(-1, 3).to(dtype),
        "batch": graph,
        "ptr": torch.cat([torch.zeros(1, dtype=torch.long, device=pos.device),
                          on["counts"].cumsum(0)]),
        "head": torch.full((len(numbers),), head, dtype=torch.long, device=pos.device),
    }


def _species(z: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    idx = index[z]
    if (idx < 0).any():
        known = sorted(np.flatnonzero(index >= 0).tolist())
        raise ValueError(
            f"structure {k} has elements {sorted(set(z[idx < 0].tolist()))} the "
            f"model was not trained on (known: {known})")
    return idx


def expected_edges(atoms: Any, r_max: float) -> float:
    """Edges a structure of uniform density would have: ``n² (4/3)π r³ / V``.

    Sizes batches for the on-device search, which finds the edges only after the
    batch is formed; a real structure's count is within a small factor of this.
    """
    n = len(atoms)
    return n * n * (4.0 / 3.0) * np.pi * r_max**3 / abs(atoms.get_volume())


def build_batch(atoms_list: Sequence[Any], r_max: float, zs: Sequence[int],
                head: int = 0, dtype: Any = None, backend: str = "vesin",
                device: str = "cpu") -> dict[str, torch.Tensor]:
    """The energy-inference input of a MACE model for ``atoms_list`` (periodic
    ``ase.Atoms``) on ``device``.

    ``zs`` is the model's element table (``model.atomic_numbers``), ``head`` the index
    of the head to use. Raises ``ValueError`` naming the structure when an element is
    not in ``zs``.
    """
    index = _element_index(zs)
    if backend == "torch":
        return device_batch(atoms_list, r_max, index, len(zs), head, dtype, device)
    graphs = [structure_graph(a, r_max, index, k, backend)
              for k, a in enumerate(atoms_list)]
    return to_device(assemble(graphs, len(zs), head, dtype), device)


def iter_batches(atoms_list: Sequence[Any], r_max: float, zs: Sequence[int], *,
                 head: int = 0, dtype: Any = None, backend: str = "vesin",
                 batch_size: int = 32, max_edges: int | None = None,
                 device: str = "cpu"):
    """Edge-budgeted batches (at most ``batch_size`` graphs and ``max_edges`` edges;
    a larger graph alone) as ``(n_graphs, batch dict on device)``, in input order.

    With the ``torch`` backend the budget counts :func:`expected_edges`, as the
    edges are found on the device after the batch is formed.
    """
    index = _element_index(zs)
    if backend == "torch":
        pending: list[Any] = []
        n_edges = 0.0
        first = 0
        for atoms in atoms_list:
            edges = 0.0 if max_edges is None else expected_edges(atoms, r_max)
            if pending and (len(pending) >= batch_size
                            or (max_edges is not None and n_edges + edges > max_edges)):
                yield len(pending), device_batch(pending, r_max, index, len(zs), head,
                                                 dtype, device, first)
                first += len(pending)
                pending, n_edges = [], 0.0
            pending.append(atoms)
            n_edges += edges
        if pending:
            yield len(pending), device_batch(pending, r_max, index, len(zs), head,
                                             dtype, device, first)
        return
    graphs: list[tuple] = []
    n_edges = 0
    for k, atoms in enumerate(atoms_list):
        g = structure_graph(atoms, r_max, index, k, backend)
        edges = len(g[2])
        if graphs and (len(graphs) >= batch_size
                       or (max_edges is not None and n_edges + edges > max_edges)):
            yield len(graphs), to_device(assemble(graphs, len(zs), head, dtype), device)
            graphs, n_edges = [], 0
        graphs.append(g)
        n_edges += edges
    if graphs:
        yield len(graphs), to_device(assemble(graphs, len(zs), head, dtype), device)


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device`` (pinned, non-blocking on CUDA)."""
    if str(device).startswith("cpu"):
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
