"""The filter's GPU path (issue 11), run wherever a CUDA device is present.

CI has no GPU: these are marked ``gpu`` and skipped there; the same code is tested on
the CPU in tests/test_graphs.py and tests/test_filter_depth.py.
``benchmarks/device_check.sh`` runs them on a GPU machine with the benchmarks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flywheel.makers.filter.graphs import neighbour_list, torch_neighbour_lists

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def test_device_search_gives_exactly_matscipys_edges():
    from tests.test_graphs import _edges, _random_cells

    cells = list(_random_cells())
    counts = [len(p) for p, _ in cells]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    s, r, u = (t.cpu().numpy() for t in torch_neighbour_lists(
        torch.as_tensor(np.concatenate([p for p, _ in cells])).cuda(),
        torch.as_tensor(np.stack([c for _, c in cells])).cuda(),
        torch.as_tensor(counts).cuda(), 5.0))
    graph = np.searchsorted(starts, s, side="right") - 1
    for b, (pos, cell) in enumerate(cells):
        m = graph == b
        got = _edges(s[m] - starts[b], r[m] - starts[b], u[m])
        assert got == _edges(*neighbour_list(pos, cell, 5.0, "matscipy")), b


def test_gpu_energies_equal_the_cpu_path(tmp_path):
    from flywheel.makers.filter.core import load_models, predict_energies
    from flywheel.makers.train.core import MaceTrainSettings, train_ensemble
    from tests.test_mace_core import make_emt_frames  # ase only: no pymatgen there

    (path,) = train_ensemble(make_emt_frames(24, seed=0), tmp_path, n_models=1,
                             settings=MaceTrainSettings(max_num_epochs=2,
                                                        num_channels=8,
                                                        stress_weight=0.0))
    structures = make_emt_frames(40, seed=5)
    cpu = predict_energies(load_models([path]), structures, graphs="mace")
    for graphs in ("torch", "vesin"):
        gpu = predict_energies(load_models([path], device="cuda"), structures,
                               device="cuda", graphs=graphs)
        np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-5)
