"""The audit slice and the enrichment maths, on constructed cases."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from flywheel.config import campaign_from_dict
from flywheel.makers.filter.acquisition import plan_selection
from flywheel.makers.hull.metrics import (
    cumulative_enrichment,
    enrichment,
    round_metrics,
)


def _pool(n=20):
    ids = [f"c{i:02d}" for i in range(n)]
    formulas = [f"F{i}" for i in range(n)]
    gens = ["substitution" if i % 2 else "saps" for i in range(n)]
    acq = np.linspace(-1.0, 1.0, n)  # c00 is the filter's favourite
    return ids, formulas, gens, acq


def _all(gens, k):
    return {None: k}


def test_audit_picks_are_uniform_over_the_pool():
    """2 audit picks from a pool of 20, 6,000 rounds with seeds (0, r): every member
    is expected 600 times. Pearson's chi-square with 19 degrees of freedom must stay
    below 43.8, its 99.9 % quantile (fixed seeds: the test is deterministic; a
    uniform draw fails it one time in a thousand seeds). The filter's favourites get
    no preference: the audit ignores the acquisition.
    """
    ids, formulas, gens, acq = _pool()
    counts: Counter[str] = Counter()
    rounds = 6000
    for r in range(rounds):
        selected, audit = plan_selection(ids, formulas, gens, acq, budget=6, n_audit=2,
                                         quotas=_all, max_per_formula=1, seed=(0, r))
        assert len(audit) == 2 and set(audit) <= set(selected)
        assert len(selected) == 6 and len(set(selected)) == 6
        counts.update(audit)
    expected = rounds * 2 / len(ids)
    chi2 = sum((counts[i] - expected) ** 2 / expected for i in ids)
    assert chi2 < 43.8, (chi2, counts)
    assert abs(counts["c00"] - expected) < 4 * math.sqrt(expected)


def test_the_filter_picks_the_rest_of_the_budget_by_acquisition():
    ids, formulas, gens, acq = _pool()
    selected, audit = plan_selection(ids, formulas, gens, acq, budget=6, n_audit=2,
                                     quotas=_all, max_per_formula=1, seed=(0, 1))
    picks = [c for c in selected if c not in audit]
    best = [c for c in ids if c not in audit][:4]  # ascending acquisition
    assert picks == best
    # same seed, same draw (a rerun of the filter job selects the same)
    again = plan_selection(ids, formulas, gens, acq, budget=6, n_audit=2, quotas=_all,
                           max_per_formula=1, seed=(0, 1))
    assert again == (selected, audit)


def test_random_strategies_ignore_the_acquisition():
    ids, formulas, gens, acq = _pool()

    def quotas(pool_gens, k):
        return {"saps": k // 2, "substitution": k - k // 2}

    firsts = Counter()
    for r in range(300):
        sel, audit = plan_selection(ids, formulas, gens, acq, budget=4, n_audit=0,
                                    quotas=quotas, max_per_formula=1,
                                    strategy="random_per_generator", seed=(1, r))
        assert audit == [] and len(sel) == 4
        assert Counter(g for c, g in zip(ids, gens) if c in sel) == {
            "saps": 2, "substitution": 2}
        firsts.update(sel)
    # c00 (best acquisition, saps) is picked ~2/10 of the time, not always
    assert 30 < firsts["c00"] < 100
    sel, _ = plan_selection(ids, formulas, gens, acq, budget=5, n_audit=1,
                            quotas=quotas, max_per_formula=1, strategy="random",
                            seed=(2, 0))
    assert len(set(sel)) == 5
    with pytest.raises(ValueError, match="strategy"):
        plan_selection(ids, formulas, gens, acq, budget=5, n_audit=1, quotas=quotas,
                       max_per_formula=1, strategy="greedy")


@pytest.mark.parametrize(
    ("budget", "fraction", "expected"),
    [(8, 0.15, 1), (6, 0.15, 1), (4, 0.15, 1), (3, 0.15, 0), (12, 0.15, 2),
     (8, 0.25, 2), (40, 0.15, 6), (8, 0.0, 0)],
)
def test_audit_count(budget, fraction, expected):
    config = campaign_from_dict({
        "name": "a", "chemistry": {"elements": ["Li", "O"]},
        "filter": {"budget": budget, "audit_fraction": fraction}})
    assert config.audit_count() == expected


def test_enrichment_matches_scipy_relative_risk():
    from scipy.stats.contingency import relative_risk

    for hits, n, base_hits, base_n in [(6, 10, 2, 10), (5, 12, 3, 20), (1, 7, 4, 9),
                                       (12, 12, 1, 4)]:
        mine = enrichment(hits, n, base_hits, base_n, confidence=0.9)
        ref = relative_risk(hits, n, base_hits, base_n)
        ci = ref.confidence_interval(confidence_level=0.9)
        assert mine["value"] == pytest.approx(ref.relative_risk, rel=1e-12)
        assert (mine["lo"], mine["hi"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_enrichment_constructed_cases():
    # (6/10) / (2/10) = 3; ln 3 ± 1.6449 sqrt(1/6 - 1/10 + 1/2 - 1/10)
    e = enrichment(6, 10, 2, 10)
    se = math.sqrt(1 / 6 - 1 / 10 + 1 / 2 - 1 / 10)
    assert e["value"] == pytest.approx(3.0)
    assert e["lo"] == pytest.approx(3.0 * math.exp(-1.6448536 * se), rel=1e-6)
    assert e["hi"] == pytest.approx(3.0 * math.exp(1.6448536 * se), rel=1e-6)
    assert e["lo"] < 1.0 < e["hi"]  # 10 audit picks cannot tell 3x from 1x at 90 %
    # no audit hit: the ratio is undefined; the interval uses +0.5 in every cell
    z = enrichment(3, 6, 0, 2)
    assert z["value"] is None
    se0 = math.sqrt(1 / 3.5 - 1 / 7 + 1 / 0.5 - 1 / 3)
    assert z["lo"] == pytest.approx((3.5 / 7) / (0.5 / 3) * math.exp(-1.6448536 * se0))
    assert enrichment(0, 5, 2, 4)["value"] == 0.0
    assert enrichment(2, 0, 1, 1) == {"value": None, "lo": None, "hi": None,
                                       "confidence": 0.9}


def test_round_metrics_separate_audit_and_filter_picks():
    def m(by, stable, pred, true, std=0.1):
        return {"selected_by": by, "stable": stable, "energy_per_atom": true,
                "prediction": {"energy_per_atom": pred, "energy_std": std,
                               "e_above_hull": 0.0}}

    mats = [m("filter", True, -1.0, -1.05), m("filter", True, -2.0, -2.0),
            m("filter", False, -3.0, -3.3), m("filter", True, -1.0, -0.99),
            m("audit", True, -1.0, -1.2), m("audit", False, -1.0, -1.0),
            m("audit", False, -1.0, -1.5)]
    out = round_metrics(mats, threshold=0.05)
    assert out["hit_rate"] == pytest.approx(4 / 7)
    assert (out["picks"]["n"], out["picks"]["hits"]) == (4, 3)
    assert (out["audit"]["n"], out["audit"]["hits"]) == (3, 1)
    assert out["base_rate"] == pytest.approx(1 / 3)
    assert out["enrichment"]["value"] == pytest.approx(0.75 / (1 / 3))
    assert out["audit"]["mae"] == pytest.approx((0.2 + 0.0 + 0.5) / 3)
    assert out["picks"]["mae"] == pytest.approx((0.05 + 0 + 0.3 + 0.01) / 4)
    # |z| = 2, 0, 5 for the audit picks: 1 of 3 inside ±1σ, 1 of 3 inside ±1.96σ
    assert out["audit"]["coverage_68"] == pytest.approx(1 / 3)
    assert out["audit"]["coverage_95"] == pytest.approx(1 / 3)
    pooled = cumulative_enrichment([out, out])
    assert pooled["value"] == pytest.approx(out["enrichment"]["value"])
    assert pooled["hi"] - pooled["lo"] < out["enrichment"]["hi"] - out["enrichment"]["lo"]


def test_unscorable_candidates_are_counted_with_a_reason():
    from pymatgen.core import Lattice, Structure

    from flywheel.makers.filter.jobs import unscorable_reason

    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.3), ["Li", "O"],
                                         [[0, 0, 0], [0.5, 0.5, 0.5]])
    li_o = {3, 8}
    assert unscorable_reason(rocksalt, -4.5, li_o) is None
    assert unscorable_reason(rocksalt, None, li_o) == (
        "no hull for Li-O (an elemental reference is missing)")
    assert unscorable_reason(rocksalt, -4.5, {3}) == "elements unknown to the model: O"
    mixed = rocksalt.copy()
    mixed.replace_species({"Li": {"Li": 0.5, "Na": 0.5}})
    assert unscorable_reason(mixed, -4.5, li_o) == "disordered structure"
