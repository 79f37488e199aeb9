"""Neighbour lists and batched graph assembly of the filter (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from flywheel.makers.filter.graphs import (
    build_batch,
    neighbour_list,
    torch_neighbour_lists,
)


def _random_cells(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    for k in range(n):
        n_atoms = int(rng.integers(1, 12))
        if k % 4 == 0:  # smaller than the cutoff: many periodic images
            cell = np.diag(rng.uniform(1.5, 3.0, 3))
        else:
            cell = np.diag(rng.uniform(3.0, 9.0, 3))
        if k % 3 == 0:  # strongly skewed
            cell[1, 0] = rng.uniform(-2, 2) * cell[0, 0]
            cell[2, :2] = rng.uniform(-1.5, 1.5, 2) * cell[0, 0]
        yield rng.uniform(0, 1, (n_atoms, 3)) @ cell, cell


def _edges(sender, receiver, shifts):
    return sorted(zip(sender.tolist(), receiver.tolist(), map(tuple, shifts.tolist()),
                      strict=True))


def test_vesin_gives_exactly_matscipys_edges():
    n_small = n_edges = 0
    for pos, cell in _random_cells():
        a = neighbour_list(pos, cell, 5.0, "matscipy")
        b = neighbour_list(pos, cell, 5.0, "vesin")
        assert _edges(*a) == _edges(*b)
        # the convention: vector = r[j] - r[i] + S @ cell, within the cutoff
        vec = pos[b[1]] - pos[b[0]] + b[2] @ cell
        assert np.all(np.linalg.norm(vec, axis=1) < 5.0)
        n_edges += len(a[0])
        widths = abs(np.linalg.det(cell)) / np.linalg.norm(
            np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        n_small += bool(np.all(widths < 5.0))  # every width under the cutoff
    assert n_small >= 50 and n_edges > 10_000


def test_batched_torch_search_gives_exactly_matscipys_edges():
    """The on-device search (issue 11), all 200 cells in one call, with some atoms
    outside their cell, equals matscipy per cell; also when done in many passes."""
    rng = np.random.default_rng(1)
    cells = []
    for pos, cell in _random_cells():
        outside = rng.random(len(pos)) < 0.5
        pos = pos + (outside[:, None] * rng.integers(-2, 3, (len(pos), 3))) @ cell
        cells.append((pos, cell))
    counts = [len(p) for p, _ in cells]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    args = (torch.as_tensor(np.concatenate([p for p, _ in cells])),
            torch.as_tensor(np.stack([c for _, c in cells])),
            torch.as_tensor(counts), 5.0)
    for max_pairs in (None, 5_000):
        s, r, u = (t.numpy() for t in torch_neighbour_lists(*args, max_pairs=max_pairs))
        graph = np.searchsorted(starts, s, side="right") - 1
        assert np.array_equal(graph, np.searchsorted(starts, r, side="right") - 1)
        for b, (pos, cell) in enumerate(cells):
            m = graph == b
            got = _edges(s[m] - starts[b], r[m] - starts[b], u[m])
            assert got == _edges(*neighbour_list(pos, cell, 5.0, "matscipy")), b
    assert len(s) > 10_000


def test_single_atom_sees_only_its_images():
    cell = np.diag([2.0, 2.0, 2.0])
    for backend in ("vesin", "matscipy", "torch"):
        if backend == "torch":
            s, r, u = (t.numpy() for t in torch_neighbour_lists(
                torch.zeros(1, 3, dtype=torch.float64),
                torch.as_tensor(cell)[None], torch.tensor([1]), 3.0))
        else:
            s, r, u = neighbour_list(np.zeros((1, 3)), cell, 3.0, backend)
        assert (s == 0).all() and (r == 0).all()
        assert len(u) == 18  # 6 images at 2 Å and 12 at 2.83 Å; none at 3.46 Å
        assert not np.any(np.all(u == 0, axis=1))


def test_unknown_element_is_named():
    from ase.build import bulk

    for backend in ("vesin", "torch"):
        with pytest.raises(ValueError, match="structure 1 has elements \\[29\\]"):
            build_batch([bulk("Al", "fcc", a=4.05), bulk("Cu", "fcc", a=3.6)], 5.0,
                        [13], backend=backend)
