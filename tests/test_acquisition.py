"""Acquisition maths on constructed cases."""

from __future__ import annotations

import numpy as np

from flywheel.makers.filter.acquisition import score, select


def test_score_constructed():
    # two members, three candidates; hull at -1.0 eV/atom everywhere
    e = np.array([[-1.10, -0.90, -1.00], [-1.00, -0.70, -1.00]])
    s = score(e, np.full(3, -1.0), kappa=1.0)
    np.testing.assert_allclose(s.mean, [-1.05, -0.80, -1.00])
    np.testing.assert_allclose(s.std, [0.05 * np.sqrt(2), 0.1 * np.sqrt(2), 0.0])
    np.testing.assert_allclose(s.e_above_hull, [-0.05, 0.20, 0.0], atol=1e-12)
    np.testing.assert_allclose(s.acquisition, s.e_above_hull - s.std)
    assert not hasattr(s, "p_stable")  # removed: nothing used it


def test_kappa_trades_mean_for_spread():
    e = np.array([[0.00, 0.05], [0.00, -0.15]])  # cand 1: higher mean, large spread
    hull = np.zeros(2)
    greedy = score(e, hull, kappa=0.0)
    explore = score(e, hull, kappa=2.0)
    assert select(["a", "b"], ["X", "Y"], greedy.acquisition, budget=1,
                  max_per_formula=1) == ["b"]  # b's mean is -0.05 < 0
    e2 = np.array([[-0.02, 0.05], [-0.02, -0.05]])  # b mean 0.0, spread 0.0707
    assert select(["a", "b"], ["X", "Y"], score(e2, hull, kappa=0)
                  .acquisition, budget=1, max_per_formula=1) == ["a"]
    assert select(["a", "b"], ["X", "Y"], score(e2, hull, kappa=2)
                  .acquisition, budget=1, max_per_formula=1) == ["b"]
    assert explore.acquisition[1] < greedy.acquisition[1]


def test_select_budget_and_polymorph_cap():
    ids = ["c1", "c2", "c3", "c4", "c5"]
    formulas = ["LiO", "LiO", "LiO", "Li2O", "FeO"]
    acq = np.array([-0.3, -0.2, -0.1, 0.1, 0.2])
    assert select(ids, formulas, acq, budget=3, max_per_formula=2) == ["c1", "c2", "c4"]
    assert select(ids, formulas, acq, budget=10, max_per_formula=1) == ["c1", "c4", "c5"]
    assert select(ids, formulas, acq, budget=0, max_per_formula=1) == []
