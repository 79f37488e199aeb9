"""Batched MACE input graphs without per-structure Python objects (issue 11).

MACE's own pipeline builds one ``AtomicData`` per structure (a matscipy neighbour
list, a dozen small tensors, most of them training labels and weights the filter never
reads) and then collates them. :func:`build_batch` builds the one dictionary the
model reads for many structures at once:

* neighbour lists from ``vesin`` (C++, periodic, any cell shape) or matscipy (MACE's
  own :func:`mace.data.neighborhood.get_neighborhood`); the two give the same edges
  (tests/test_graphs.py: 200 random cells, including cells smaller than the cutoff
  and strongly skewed ones);
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

#: Neighbour-list backends: ``vesin`` when installed, else ``matscipy``.
BACKENDS = ("vesin", "matscipy")


def default_backend() -> str:
    """``vesin`` when importable (faster; measured in benchmarks/filter_throughput.py),
    else ``matscipy`` (always there: MACE depends on it)."""
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


def _element_index(zs: Sequence[int]) -> np.ndarray:
    index = np.full(119, -1, dtype=np.int64)
    index[np.asarray(zs, dtype=np.int64)] = np.arange(len(zs))
    return index


def structure_graph(atoms: Any, r_max: float, index: np.ndarray, k: int = 0,
                    backend: str = "vesin") -> tuple:
    """One structure's arrays: positions, element indices, edges, shifts, cell."""
    z = atoms.get_atomic_numbers()
    idx = index[z]
    if (idx < 0).any():
        known = sorted(np.flatnonzero(index >= 0).tolist())
        raise ValueError(
            f"structure {k} has elements {sorted(set(z[idx < 0].tolist()))} the "
            f"model was not trained on (known: {known})")
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


def build_batch(atoms_list: Sequence[Any], r_max: float, zs: Sequence[int],
                head: int = 0, dtype: Any = None, backend: str = "vesin",
                ) -> dict[str, torch.Tensor]:
    """The energy-inference input of a MACE model for ``atoms_list`` (periodic
    ``ase.Atoms``), on the CPU; move it with :func:`to_device`.

    ``zs`` is the model's element table (``model.atomic_numbers``), ``head`` the index
    of the head to use. Raises ``ValueError`` naming the structure when an element is
    not in ``zs``.
    """
    index = _element_index(zs)
    graphs = [structure_graph(a, r_max, index, k, backend)
              for k, a in enumerate(atoms_list)]
    return assemble(graphs, len(zs), head, dtype)


def iter_batches(atoms_list: Sequence[Any], r_max: float, zs: Sequence[int], *,
                 head: int = 0, dtype: Any = None, backend: str = "vesin",
                 batch_size: int = 32, max_edges: int | None = None):
    """Edge-budgeted batches (at most ``batch_size`` graphs and ``max_edges`` edges;
    a larger graph alone) as ``(n_graphs, batch dict)``, in input order."""
    index = _element_index(zs)
    pending: list[tuple] = []
    n_edges = 0
    for k, atoms in enumerate(atoms_list):
        g = structure_graph(atoms, r_max, index, k, backend)
        edges = len(g[2])
        if pending and (len(pending) >= batch_size
                        or (max_edges is not None and n_edges + edges > max_edges)):
            yield len(pending), assemble(pending, len(zs), head, dtype)
            pending, n_edges = [], 0
        pending.append(g)
        n_edges += edges
    if pending:
        yield len(pending), assemble(pending, len(zs), head, dtype)


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device`` (pinned, non-blocking on CUDA)."""
    if str(device).startswith("cpu"):
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
