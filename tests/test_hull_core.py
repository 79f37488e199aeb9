"""Hull core against pymatgen's own Li-Fe-O reference set and constructed cases."""

from __future__ import annotations

import csv

import pytest
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry

from flywheel.makers.hull.core import HullIndex, touched_systems, update_hull
from flywheel.makers.hull.metrics import round_metrics


def _e(formula: str, e_per_atom: float, eid: str) -> ComputedEntry:
    c = Composition(formula)
    return ComputedEntry(c, e_per_atom * c.num_atoms, entry_id=eid)


def test_binary_hull_by_hand():
    entries = [_e("Li", 0.0, "li"), _e("O", 0.0, "o"), _e("Li2O", -2.0, "li2o"),
               _e("LiO", -1.0, "lio"), _e("Li2O2", -1.6, "li2o2")]
    res = update_hull(entries)
    assert res["li2o"].stable and res["li"].stable
    # LiO has Li2O2's composition: 0.6 eV/atom above it
    assert res["lio"].e_above_hull == pytest.approx(0.6)
    assert res["li2o2"].e_above_hull == 0.0
    assert res["li2o2"].stable
    # phase-separation energy of Li2O2 against the Li2O (x=1/3, -2.0) -- O tie line,
    # -1.5 eV/atom at x=1/2: -1.6 - (-1.5) = -0.1
    assert res["li2o2"].decomposition_energy == pytest.approx(-0.1)
    # Li2O against Li + Li2O2: x_O=1/3 lies between 0 and 0.5 → -1.6*(2/3) = -1.0667
    assert res["li2o"].decomposition_energy == pytest.approx(-2.0 + 1.6 * 2 / 3)
    assert not res["lio"].stable and res["lio"].decomposition_energy == pytest.approx(0.6)


def test_touched_systems_include_supersets():
    systems = {"Li", "O", "Li-O", "Fe-O", "Fe-Li-O"}
    assert touched_systems(systems, {"Li-O"}) == {"Li-O", "Fe-Li-O"}


def test_missing_elemental_reference_skips_system():
    res = update_hull([_e("Li", 0.0, "li"), _e("Li2O", -2.0, "li2o")])
    assert set(res) == {"li"}
    assert HullIndex([_e("Li", 0.0, "li")]).hull_energy_per_atom(Composition("Li2O")) is None


def test_pymatgen_li_fe_o_reference(shared_data):
    rows = list(csv.DictReader((shared_data / "pd_entries_test.csv").open()))
    entries = []
    for i, r in enumerate(rows):
        comp = Composition({el: float(r[el]) for el in ("Li", "Fe", "O") if float(r[el])})
        entries.append(ComputedEntry(comp, float(r["Final energy"]), entry_id=str(i)))
    res = update_hull(entries)
    stable = {entries[int(k)].composition.reduced_formula for k, v in res.items()
              if v.stable}
    assert stable == {"Fe", "FeO", "Fe2O3", "Fe3O4", "LiFeO2", "Li", "Li2O", "Li2O2",
                      "Li5FeO4", "Li2FeO3", "O2"}
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    pd = PhaseDiagram(entries)
    worst = max(abs(pd.get_e_above_hull(e) - res[e.entry_id].e_above_hull)
                for e in entries)
    assert worst < 1e-9


def test_round_metrics():
    mats = [
        {"stable": True, "energy_per_atom": -1.0,
         "prediction": {"energy_per_atom": -1.1, "e_above_hull": 0.0}},
        {"stable": False, "energy_per_atom": -2.0,
         "prediction": {"energy_per_atom": -1.8, "e_above_hull": 0.01}},
        {"stable": False, "energy_per_atom": -3.0,
         "prediction": {"energy_per_atom": -3.0, "e_above_hull": 0.3}},
        {"stable": True, "energy_per_atom": -1.0,
         "prediction": {"energy_per_atom": -1.0, "e_above_hull": 0.2}},
    ]
    m = round_metrics(mats, threshold=0.05)
    assert m["evaluated"] == 4 and m["stable_found"] == 2
    assert m["hit_rate"] == pytest.approx(0.5)
    assert m["filter_mae"] == pytest.approx((0.1 + 0.2 + 0 + 0) / 4)
    assert m["precision"] == pytest.approx(0.5)  # 2 calls, 1 right
    assert m["recall"] == pytest.approx(0.5)  # 2 stable, 1 called
    assert round_metrics([], 0.05)["hit_rate"] is None
