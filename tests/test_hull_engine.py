"""HullEngine against pymatgen's PhaseDiagram, by hand, and incremental vs full."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from flywheel.makers.hull.engine import (
    HullEngine,
    HullEntry,
    compute_hull,
    parse_composition,
    solve_systems,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METHODS = ("auto", "qhull", "lp")
TOL = 1e-6  # eV/atom, the agreement with pymatgen the engine promises
LI_FE_O_STABLE = {"Fe", "FeO", "Fe2O3", "Fe3O4", "LiFeO2", "Li", "Li2O", "Li2O2",
                  "Li5FeO4", "Li2FeO3", "O2"}

Raw = tuple[str, dict[str, int], float]


def _same_composition(a: Composition, b: Composition) -> bool:
    fa, fb = a.fractional_composition, b.fractional_composition
    return set(fa) == set(fb) and all(abs(fa[el] - fb[el]) <= 1e-8 for el in fa)


def _pymatgen_reference(entries: list[PDEntry]) -> dict[str, tuple[float, float]]:
    """Name → (e_above_hull, decomposition energy), both from exact PhaseDiagrams.

    The phase-separation energy is the hull of the other compositions at the entry's
    composition (pymatgen's SLSQP route is checked on Li-Fe-O, with tight tols).
    """
    pd = PhaseDiagram(entries)
    out = {}
    for e in entries:
        e_hull = float(pd.get_e_above_hull(e))
        decomp = e_hull
        if e_hull <= 5e-5 and not e.is_element:
            space = set(e.composition.elements)
            others = [o for o in entries if set(o.composition.elements) <= space
                      and not _same_composition(o.composition, e.composition)]
            hull = PhaseDiagram(others).get_hull_energy_per_atom(e.composition)
            decomp = e.energy_per_atom - hull
        out[e.name] = (e_hull, decomp)
    return out


def _synthetic(rng: np.random.Generator, elements: tuple[str, ...], n: int,
               *, zero: bool = False) -> list[Raw]:
    """Random entries with polymorphs, unstable elements and near-degenerate pairs."""
    mu = {el: 0.0 if zero else float(rng.uniform(-8, -2)) for el in elements}
    out = []
    for i in range(n):
        amounts: dict[str, int] = {}
        while len(amounts) < 2:
            amounts = {el: int(a) for el in elements if (a := rng.integers(0, 5))}
        total = sum(amounts.values())
        # the first entry is deep enough to be a vertex, so that its polymorph below
        # lands within the tolerance above the hull
        e_form = -2.5 if i == 0 else -rng.uniform(0, 1.5) + rng.normal(0, 0.05)
        e_ref = sum(mu[el] * a / total for el, a in amounts.items())
        out.append((f"c{i}", amounts, e_ref + e_form))
    for j, el in enumerate(elements):
        if not zero:
            out.append((f"el{j}", {el: 1}, mu[el]))
        out.append((f"elp{j}", {el: 2}, mu[el] + float(rng.uniform(0, 0.2))))
    for i in range(3):  # polymorphs: one within the tolerance, one clearly above
        name, amounts, e = out[i]
        out.append((f"{name}_a", {k: 2 * v for k, v in amounts.items()}, e + 2e-5))
        out.append((f"{name}_b", amounts, e + 0.03))
    return out


def _to_pd_entries(entries: list[Raw], zero: bool = False) -> list[PDEntry]:
    out = [PDEntry(Composition(c), e * sum(c.values()), name=i) for i, c, e in entries]
    if zero:
        els = {el for _, c, _ in entries for el in c}
        out += [PDEntry(Composition(el), 0.0, name=f"ref_{el}") for el in els]
    return out


def _assert_agrees(engine: HullEngine, ref: dict[str, tuple[float, float]]) -> None:
    for name, (e_hull, decomp) in ref.items():
        if name.startswith("ref_"):
            continue
        rec = engine.results[name]
        assert rec.e_above_hull == pytest.approx(e_hull, abs=TOL), name
        assert rec.stable == (e_hull <= engine.tolerance), name
        assert rec.decomposition_energy == pytest.approx(decomp, abs=TOL), name
        assert (rec.phase_separation_energy is None) == (not rec.stable), name


# ------------------------------------------------------------ pymatgen's Li-Fe-O set


@pytest.fixture(scope="module")
def li_fe_o() -> list[PDEntry]:
    path = SHARED_DATA / "pd_entries_test.csv"
    if not path.is_file():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    entries = []
    for i, row in enumerate(csv.DictReader(path.open())):
        amounts = {el: float(row[el]) for el in ("Li", "Fe", "O") if float(row[el])}
        entries.append(PDEntry(Composition(amounts), float(row["Final energy"]),
                               name=str(i)))
    return entries


def test_li_fe_o_matches_pymatgen(li_fe_o):
    pd = PhaseDiagram(li_fe_o)
    assert {e.composition.reduced_formula for e in pd.stable_entries} == LI_FE_O_STABLE
    reference = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about >200 competing entries
        for e in li_fe_o:
            e_hull = pd.get_e_above_hull(e)
            # SLSQP's default tol 1e-8 stops 1.2e-5 eV/atom short on Li2FeO3
            decomp = (pd.get_phase_separation_energy(e, tols=(1e-12,))
                      if e_hull <= 5e-5 else e_hull)
            reference[e.name] = (e_hull, decomp)
    raw = [(e.name, e.composition, e.energy_per_atom) for e in li_fe_o]
    for method in METHODS:
        engine = HullEngine(raw, method=method)
        stable = {li_fe_o[int(k)].composition.reduced_formula: r
                  for k, r in engine.results.items() if r.stable}
        assert set(stable) == LI_FE_O_STABLE, method
        _assert_agrees(engine, reference)
        assert stable["Li2FeO3"].decomposition_energy == pytest.approx(
            -0.0171080093, abs=1e-9)


def test_li_fe_o_from_pymatgen_entries(li_fe_o):
    """pymatgen entries go in as they are."""
    from pymatgen.entries.computed_entries import ComputedEntry

    entries = [ComputedEntry(e.composition, e.energy, entry_id=e.name) for e in li_fe_o]
    results = compute_hull(entries)
    assert len(results) == len(li_fe_o)
    assert sum(r.stable for r in results.values()) >= len(LI_FE_O_STABLE)


# ------------------------------------------------------------ synthetic sets


@pytest.mark.parametrize(("elements", "seed"), [
    (("Li", "Fe", "O"), 0), (("Li", "Fe", "O"), 1), (("Na", "Mn", "Si", "O"), 2),
    (("Na", "Mn", "Si", "O"), 3), (("K", "Ca", "Ti", "Al", "S", "N"), 4),
])
def test_synthetic_total_energies_match_pymatgen(elements, seed):
    entries = _synthetic(np.random.default_rng(seed), elements, 90)
    reference = _pymatgen_reference(_to_pd_entries(entries))
    for method in METHODS:
        engine = HullEngine(entries, method=method)
        assert not engine.skipped
        _assert_agrees(engine, reference)
    res = engine.results
    assert any(r.stable and r.decomposition_energy < -0.01 for r in res.values())
    assert res["c0_a"].stable and res["c0_a"].e_above_hull > 1e-5


def test_synthetic_formation_energies_with_implicit_elements():
    elements = ("Mg", "Al", "O", "F")
    entries = _synthetic(np.random.default_rng(7), elements, 80, zero=True)
    reference = _pymatgen_reference(_to_pd_entries(entries, zero=True))
    for method in METHODS:
        engine = HullEngine(entries, elements_at_zero=True, method=method)
        _assert_agrees(engine, reference)
        # the elemental polymorphs sit above the implicit 0 eV/atom reference
        assert not any(engine.results[f"elp{j}"].stable for j in range(4))


def test_methods_agree_on_a_five_element_set():
    entries = _synthetic(np.random.default_rng(11), ("Li", "Na", "K", "Cl", "O"), 150)
    qhull = HullEngine(entries, method="qhull").results
    lp = HullEngine(entries, method="lp").results
    for name, rec in qhull.items():
        assert lp[name].e_above_hull == pytest.approx(rec.e_above_hull, abs=1e-9)
        assert lp[name].decomposition_energy == pytest.approx(
            rec.decomposition_energy, abs=1e-9)


# ------------------------------------------------------------ by hand


def test_binary_by_hand_and_tie_line():
    engine = HullEngine([("li", "Li", 0.0), ("o", "O", 0.0), ("li2o", "Li2O", -2.0),
                         ("lio", "LiO", -1.5), ("li2o_hi", "Li2O", -1.9)])
    res = engine.results
    # LiO sits exactly on the Li2O–O tie line: stable, nothing to gain by separating
    assert res["lio"].stable
    assert res["lio"].e_above_hull == pytest.approx(0.0, abs=1e-12)
    assert res["lio"].decomposition_energy == pytest.approx(0.0, abs=1e-12)
    # without Li2O the hull at x_O = 1/3 is the Li–LiO line at -1.0
    assert res["li2o"].decomposition_energy == pytest.approx(-1.0)
    assert res["li2o"].to_hull_result().decomposition_energy == pytest.approx(-1.0)
    assert res["li2o_hi"].e_above_hull == pytest.approx(0.1)
    assert res["li2o_hi"].phase_separation_energy is None
    assert res["o"].decomposition_energy == 0.0 and res["o"].stable
    assert engine.hull_energy("Li3O") == pytest.approx(-1.5)  # 3/4 Li2O + 1/4 Li
    assert engine.hull_energy("Li2O") == pytest.approx(res["li2o"].hull_energy)


def test_tolerance_is_configurable():
    entries = [("a", "Li", 0.0), ("b", "O", 0.0), ("c", "Li2O", -2.0),
               ("d", "Li2O", -1.9999)]
    assert not HullEngine(entries).results["d"].stable  # 1e-4 above, default 5e-5
    loose = HullEngine(entries, tolerance=2e-4).results["d"]
    assert loose.stable and loose.phase_separation_energy == pytest.approx(-1.9999)


def test_missing_elemental_reference_is_skipped_with_reason():
    engine = HullEngine([("li", "Li", -1.9), ("li2o", "Li2O", -3.0),
                         ("lio2", "LiO2", -2.0)])
    assert set(engine.results) == {"li"}
    assert engine.skipped["li2o"] == "no elemental reference for O in Li-O"
    assert engine.hull_energy("Li2O") is None
    # formation energies: the caller says elements sit at 0 eV/atom
    zero = HullEngine([("li2o", "Li2O", -2.0), ("lio2", "LiO2", -0.5)],
                      elements_at_zero=True)
    # Li2O against Li + LiO2 (that line reaches -0.25 at x_O = 1/3)
    assert zero.results["li2o"].decomposition_energy == pytest.approx(-1.75)
    assert zero.results["lio2"].e_above_hull == pytest.approx(0.5)  # ½ Li2O + ½ O
    # the missing reference arrives: the skipped entries get records, reported
    assert engine.add_entries([("o", "O", -4.0)]) == {"o", "li2o", "lio2"}
    assert not engine.skipped


def test_parse_composition():
    assert parse_composition("Bi1Cu1I6K2") == {"Bi": 1, "Cu": 1, "I": 6, "K": 2}
    assert parse_composition("Fe2O3") == {"Fe": 2, "O": 3}
    assert parse_composition("Ca(OH)2") == {"Ca": 1, "O": 2, "H": 2}
    assert parse_composition(Composition("Li2O")) == {"Li": 2, "O": 1}
    assert parse_composition({"Li": 1, "O": 0}) == {"Li": 1}
    with pytest.raises(ValueError, match="unknown element"):
        parse_composition("Xx2O")
    with pytest.raises(ValueError, match="negative"):
        parse_composition({"Li": -1})


def test_solve_systems_pure():
    """A ternary's boundary: corners and one binary vertex; two own entries."""
    xb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0, 0.5]], dtype=float)
    eb = np.array([0, 0, 0, -1.0])
    xo = np.array([[1 / 3, 1 / 3, 1 / 3], [0.25, 0.25, 0.5]])
    eo = np.array([-0.9, -0.5])
    for method in ("qhull", "lp"):
        (sol,) = solve_systems([(xb, eb, xo, eo)], method=method)
        # at (1/3, 1/3, 1/3) the boundary hull is 2/3 binary + 1/3 B corner
        assert sol.hull_without[0] == pytest.approx(-2 / 3)
        assert sol.hull[0] == pytest.approx(-0.9)
        assert sol.vertex.tolist() == [True, False]
        # the second entry's best mixture: 3/4 of the first + 1/4 of the C corner
        assert sol.hull[1] == pytest.approx(-0.675)
        assert np.isnan(sol.hull_without[1])


# ------------------------------------------------------------ incremental updates


def _close(a, b, atol: float = 1e-12) -> bool:
    if isinstance(a, str) or isinstance(b, str):  # skip reasons
        return a == b
    pairs = [(a.e_above_hull, b.e_above_hull), (a.hull_energy, b.hull_energy),
             (a.decomposition_energy, b.decomposition_energy)]
    return a.stable == b.stable and all(abs(x - y) <= atol for x, y in pairs)


def _assert_same_records(a, b) -> None:
    assert set(a) == set(b)
    for k in a:
        assert _close(a[k], b[k], atol=1e-10), k


@pytest.mark.parametrize("method", ["auto", "lp"])
def test_incremental_equals_full_recompute(method):
    rng = np.random.default_rng(5)
    entries = _synthetic(rng, ("Li", "Fe", "O", "P", "S"), 160)
    order = rng.permutation(len(entries))
    engine = HullEngine([entries[i] for i in order[:60]], method=method)
    for batch in np.array_split(order[60:], 4):
        before = {**engine.skipped, **engine.results}
        changed = engine.add_entries([entries[i] for i in batch])
        after = {**engine.skipped, **engine.results}
        truly = {k for k in after if k not in before or not _close(before[k], after[k])}
        assert changed == truly and truly
    _assert_same_records(engine.results, HullEngine(entries, method=method).results)


def test_new_binary_phase_moves_the_ternary():
    """A stable Li-O phase changes Li-Fe-O records; an unstable one nothing else."""
    base = [HullEntry("li", {"Li": 1}, 0.0), HullEntry("fe", {"Fe": 1}, 0.0),
            HullEntry("o", {"O": 1}, 0.0), HullEntry("feo", {"Fe": 1, "O": 1}, -1.5),
            HullEntry("lifeo2", {"Li": 1, "Fe": 1, "O": 2}, -1.6)]
    engine = HullEngine(base)
    # LiFeO2 against 1/2 FeO + 1/4 Li + 1/4 O
    assert engine.results["lifeo2"].decomposition_energy == pytest.approx(-0.85)
    assert engine.add_entries([("bad", "Li2O", +0.1)]) == {"bad"}
    assert engine.last_update["systems_solved"] == 1  # Li-Fe-O not solved again
    assert engine.add_entries([("li2o", "Li2O", -2.0)]) == {"li2o", "bad", "lifeo2"}
    assert engine.last_update["systems_solved"] == 2
    # now 1/2 FeO + 3/8 Li2O + 1/8 O = -1.5 at LiFeO2's composition
    assert engine.results["lifeo2"].decomposition_energy == pytest.approx(-0.1)
    full = HullEngine([*base, ("bad", "Li2O", 0.1), ("li2o", "Li2O", -2.0)])
    _assert_same_records(engine.results, full.results)


def test_replacing_an_entry_by_id():
    base = [("li", "Li", 0.0), ("o", "O", 0.0), ("x", "Li2O", -2.0), ("y", "LiO", -1.0)]
    engine = HullEngine(base)
    changed = engine.add_entries([("x", "Li2O2", -1.6)])  # x moves composition
    assert {"x", "y"} <= changed
    assert "Li-O" in engine.chemical_systems and len(engine) == 4
    moved = [*base[:2], ("x", "Li2O2", -1.6), ("y", "LiO", -1.0)]
    _assert_same_records(engine.results, HullEngine(moved).results)
