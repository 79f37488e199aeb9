"""A convex-hull engine for 10⁵ entries: exact, per chemical system, incremental.

A point of a proper subsystem U of a chemical system T touches the hull of T only if
it is a vertex of the hull of U (the hull of T restricted to the face U *is* the hull
of U). So systems are solved smallest first, each against the elemental corners, the
vertices of its proper subsystems (its *boundary*) and its own entries: hulls stay at
dozens of points, and a system is solved again only when it gained entries or a
subsystem's vertex set changed. Qhull answers up to ``max_qhull_elements`` elements,
batched HiGHS linear programs above; ``docs/hull.md`` has definitions and timings.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from flywheel.makers.hull.core import HullResult

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Mapping, Sequence

    from pymatgen.core import Composition

    CompositionLike = Union[str, Mapping[str, float], Composition]
    EntryLike = Union["HullEntry", tuple[str, CompositionLike, float]]
    Problem = tuple[np.ndarray, np.ndarray, np.ndarray]  # points x, e; queries q

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 5e-5
"""Energy above hull (eV/atom) at or below which an entry counts as stable."""
VERTEX_EPS = 1e-9
"""Points within this of the hull (eV/atom) are not handed on as vertices: dropping
one moves no hull energy by more than this, and round-off cannot promote points that
lie on a facet."""
SAME_COMPOSITION_TOL = 1e-8
"""Fractional-composition tolerance for "same composition" (pymatgen's
``Composition.amount_tolerance``, which its phase-separation energy uses)."""
MAX_QHULL_ELEMENTS = 4
"""Largest system solved with Qhull under ``method="auto"``. Measured on the 85k MP
set, CPU per hull query: Qhull 0.07 / 0.2 / 0.9–1.4 ms for 3 / 4 / 5 elements, batched
LPs 0.14 / 0.37 / 0.35–0.48 ms; Qhull of ~280 points in 9-D takes seconds."""
LP_CHUNK = 64
"""Queries per block-diagonal LP. HiGHS's dual simplex scales super-linearly: one LP
for all 9,052 five-element queries took 14 s, chunks of 50–100 took 4.4 s."""
_NORMAL_EPS = 1e-9  # |n_E| below this: a vertical facet, not part of the lower hull
_LP_OPTIONS = {"primal_feasibility_tolerance": 1e-10,
               "dual_feasibility_tolerance": 1e-10}
_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*\.?\d*)")
_PLAIN_FORMULA = re.compile(r"(?:[A-Z][a-z]?(?:\d+\.?\d*|\.\d+)?)+")

Method = Literal["auto", "qhull", "lp"]
Chemsys = tuple[str, ...]


@dataclass(frozen=True)
class HullEntry:
    """One entry: an id, a composition (element → amount) and an energy per atom."""

    entry_id: str
    composition: Mapping[str, float]
    energy_per_atom: float
    """eV/atom, total or formation energy (the engine works with either)."""


@dataclass(frozen=True)
class HullRecord:
    """Hull position of one entry (all energies in eV/atom)."""

    e_above_hull: float
    """Energy above the hull of all entries, the entry included (≥ 0)."""
    decomposition_energy: float
    """Phase-separation energy if stable, else ``e_above_hull`` (GNoME's definition)."""
    phase_separation_energy: float | None
    """Energy against the hull of all other compositions; None when unstable."""
    hull_energy: float
    """Energy of the hull of all entries at the entry's composition."""
    stable: bool
    """``e_above_hull`` ≤ the engine's tolerance."""

    def to_hull_result(self) -> HullResult:
        """The :class:`~flywheel.makers.hull.core.HullResult` view of this record."""
        return HullResult(self.e_above_hull, self.decomposition_energy, self.stable)


@dataclass(frozen=True)
class SystemSolution:
    """Hull energies at one system's own entries (formation basis, eV/atom)."""

    hull: np.ndarray
    """Hull of all points at each entry's composition."""
    hull_without: np.ndarray
    """Hull of the points of other compositions, at stable entries (NaN elsewhere)."""
    vertex: np.ndarray
    """Which entries are hull vertices (handed on to the supersystems)."""


# ------------------------------------------------------------------ pure functions


@cache
def _element_symbols() -> frozenset[str]:
    from pymatgen.core.periodic_table import Element

    return frozenset(e.symbol for e in Element)


def parse_composition(composition: CompositionLike) -> dict[str, float]:
    """Element symbol → positive amount.

    Plain formulas (``"Li2O"``, ``"Bi1Cu1I6K2"``) go through a regular expression,
    ~30× faster than pymatgen's ``Composition`` on 10⁵ strings; anything else
    (brackets, oxidation states) goes through ``Composition``.
    """
    if isinstance(composition, str) and _PLAIN_FORMULA.fullmatch(composition):
        out: dict[str, float] = {}
        for el, amt in _FORMULA.findall(composition):
            out[el] = out.get(el, 0.0) + (float(amt) if amt else 1.0)
        if unknown := set(out) - _element_symbols():
            raise ValueError(f"unknown elements {sorted(unknown)} in {composition!r}")
    elif isinstance(composition, str):
        from pymatgen.core import Composition

        out = {str(el): float(a) for el, a in Composition(composition).items()}
    else:
        out = {getattr(k, "symbol", str(k)): float(a) for k, a in composition.items()}
    if any(a < 0 for a in out.values()):
        raise ValueError(f"negative amount in {composition!r}")
    if not (out := {el: a for el, a in out.items() if a > 0}):
        raise ValueError(f"empty composition {composition!r}")
    return out


def lower_hull_planes(x: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planes of the lower convex hull of points in (composition, energy) space.

    ``x`` are ``(n, k)`` fractional compositions including the ``k`` simplex corners
    (so every composition is covered), ``e`` energies per atom. The hull energy at
    ``q`` is ``max(q[1:] @ slopes.T + offsets)``: a convex function is the maximum of
    its supporting planes, so no facet has to be located.
    """
    from scipy.spatial import ConvexHull

    k = x.shape[1]
    # A point high above the simplex centre keeps the hull full-dimensional when all
    # points are coplanar (only the elements); its facets face up and drop out.
    top = max(float(e.max()), 0.0) + 1.0 + float(np.ptp(e))
    roof = np.append(np.full(k - 1, 1.0 / k), top)
    eq = ConvexHull(np.vstack([np.column_stack([x[:, 1:], e]), roof])).equations
    low = eq[eq[:, -2] < -_NORMAL_EPS]
    return -low[:, :-2] / low[:, -2:-1], -low[:, -1] / low[:, -2]


def qhull_energies(x: np.ndarray, e: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Lower-hull energies of the points ``(x, e)`` at compositions ``q`` (Qhull)."""
    slopes, offsets = lower_hull_planes(x, e)
    return (q[:, 1:] @ slopes.T + offsets).max(axis=1)


def lp_energies(problems: Sequence[Problem], chunk: int = LP_CHUNK) -> list[np.ndarray]:
    """Lower-hull energies for many ``(x, e, q)`` problems as linear programs.

    Each query is ``min Σ w_j e_j`` s.t. ``Σ w_j x_j = q``, ``w ≥ 0``: the cheapest
    mixture of the points with composition ``q`` (``Σ w_j = 1`` follows from the rows
    summing to 1). Queries are stacked block-diagonally, ``chunk`` per HiGHS call,
    because scipy's ``linprog`` spends ~1 ms per call before HiGHS starts.
    """
    import scipy.sparse as sp
    from scipy.optimize import linprog

    flat = [(x, e, qi) for x, e, q in problems for qi in q]
    values = np.empty(len(flat))
    for start in range(0, len(flat), chunk):
        part = flat[start : start + chunk]
        res = linprog(
            np.concatenate([f[1] for f in part]),
            A_eq=sp.block_diag([f[0].T for f in part], format="csc"),
            b_eq=np.concatenate([f[2] for f in part]),
            bounds=(0, None), method="highs-ds", options=_LP_OPTIONS,
        )
        if res.status != 0:
            raise RuntimeError(f"hull LP failed: {res.message}")
        ends = np.cumsum([len(f[1]) for f in part])
        for j, (w, f) in enumerate(zip(np.split(res.x, ends[:-1]), part)):
            values[start + j] = f[1] @ w
    sizes = np.cumsum([0] + [len(q) for _, _, q in problems])
    return [values[a:b] for a, b in zip(sizes[:-1], sizes[1:])]


def hull_energies(
    problems: Sequence[Problem], method: Literal["qhull", "lp"]
) -> list[np.ndarray]:
    """Lower-hull energies for ``(x, e, q)`` problems; Qhull errors fall back to LPs."""
    if method == "lp":
        return lp_energies(problems)
    from scipy.spatial import QhullError

    out = []
    for x, e, q in problems:
        try:
            out.append(qhull_energies(x, e, q))
        except QhullError as exc:
            logger.debug("Qhull failed on %s points, LP instead: %s", x.shape, exc)
            out.extend(lp_energies([(x, e, q)]))
    return out


def _system_steps(
    xb: np.ndarray, eb: np.ndarray, xo: np.ndarray, eo: np.ndarray, tolerance: float
) -> Generator[list[Problem], list[np.ndarray], SystemSolution]:
    """Solve one system; it yields its hull problems so systems can share LPs."""
    corners_only = len(xb) == xb.shape[1]

    def problem(extra: np.ndarray, q: np.ndarray) -> Problem:
        return np.vstack([xb, xo[extra]]), np.concatenate([eb, eo[extra]]), q

    if np.all(np.abs(xo - xo[0]) <= SAME_COMPOSITION_TOL):
        # One composition (most systems): the boundary hull there answers everything.
        hb = 0.0 if corners_only else float((yield [(xb, eb, xo[:1])])[0][0])
        hull = np.full(len(eo), min(hb, float(eo.min())))
        e_above = eo - hull
        without = np.where(e_above <= tolerance, hb, np.nan)
        vertex = (eo < hb - VERTEX_EPS) & (e_above <= VERTEX_EPS)
        return SystemSolution(hull, without, vertex)
    # The corners sit at zero, so the hull is ≤ 0: entries at or above zero can never
    # be vertices and stay out of every hull below.
    cand = eo < -VERTEX_EPS
    if corners_only and not cand.any():
        hull = np.zeros(len(eo))
    else:
        hull = np.minimum((yield [problem(cand, xo)])[0], 0.0)
    e_above = eo - hull
    groups, done = [], np.zeros(len(eo), dtype=bool)
    for i in np.flatnonzero(e_above <= tolerance):
        if not done[i]:
            same = np.all(np.abs(xo - xo[i]) <= SAME_COMPOSITION_TOL, axis=1)
            done |= same
            groups.append((i, same))
    without = np.full(len(eo), np.nan)
    for _, same in groups:
        without[same] = 0.0  # the flat hull of the corners, unless asked below
    asks = [(i, s) for i, s in groups if not corners_only or (cand & ~s).any()]
    if asks:
        values = yield [problem(cand & ~s, xo[i : i + 1]) for i, s in asks]
        for (_, same), v in zip(asks, values):
            without[same] = min(float(v[0]), 0.0)
    return SystemSolution(hull, without, cand & (e_above <= VERTEX_EPS))


def solve_systems(
    systems: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    method: Literal["qhull", "lp"] = "qhull",
) -> list[SystemSolution]:
    """Hull energies of the entries of independent chemical systems.

    Parameters
    ----------
    systems
        ``(xb, eb, xo, eo)`` per system: the boundary points (the ``k`` simplex
        corners at energy 0 and the hull vertices of every proper subsystem;
        fractional compositions ``(m, k)``, formation energies ``(m,)``), then the
        system's own entries (every element present).
    tolerance
        Stability tolerance (eV/atom): entries within it get ``hull_without``.
    method
        ``"qhull"`` or ``"lp"`` (the LPs of all systems share batched solves).
    """
    gens = [_system_steps(*s, tolerance) for s in systems]
    out: list[SystemSolution | None] = [None] * len(gens)
    pending: dict[int, list[Problem]] = {}

    def step(i: int, sent: list[np.ndarray] | None) -> None:
        try:
            pending[i] = gens[i].send(sent)
        except StopIteration as stop:
            out[i] = stop.value

    for i in range(len(gens)):
        step(i, None)
    while pending:
        batch = list(pending.items())
        pending.clear()
        values = hull_energies([p for _, ps in batch for p in ps], method)
        pos = 0
        for i, ps in batch:
            step(i, values[pos : pos + len(ps)])
            pos += len(ps)
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------ the engine


@dataclass
class _System:
    """Entries of one chemical system and the vertices it hands to supersystems."""

    elements: Chemsys
    ids: list[str] = field(default_factory=list)
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # fractional x, raw energy
    vertices: tuple[np.ndarray, np.ndarray] | None = None  # raw energies
    ref: float | None = None  # unary systems: the elemental reference
    signature: object = ()  # what supersystems see; () = no vertices, as if absent


class HullEngine:
    """Exact convex hulls of many entries by chemical system, updated in place.

    Parameters
    ----------
    entries
        Initial entries: :class:`HullEntry`, ``(id, composition, energy_per_atom)``
        tuples, or pymatgen entries (``entry_id``, ``composition``,
        ``energy_per_atom``).
    tolerance
        Energy above hull (eV/atom) at or below which an entry counts as stable.
    elements_at_zero
        The energies are formation energies: every element gets an implicit
        reference at 0 eV/atom. Otherwise a system with an element that has no unary
        entry is skipped, with the reason in :attr:`skipped`.
    method
        ``"auto"`` (Qhull up to ``max_qhull_elements`` elements, batched LPs above),
        ``"qhull"`` or ``"lp"``.
    max_qhull_elements
        Crossover for ``"auto"``.

    Examples
    --------
    >>> eng = HullEngine([("a", "Li", 0.0), ("b", "O", 0.0), ("c", "Li2O", -2.0)])
    >>> eng.results["c"].stable
    True
    >>> sorted(eng.add_entries([("d", "Li2O2", -1.7)]))  # Li2O's competitors moved
    ['c', 'd']
    """

    def __init__(
        self,
        entries: Iterable[EntryLike] = (),
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        elements_at_zero: bool = False,
        method: Method = "auto",
        max_qhull_elements: int = MAX_QHULL_ELEMENTS,
    ) -> None:
        if method not in ("auto", "qhull", "lp"):
            raise ValueError(f"unknown method {method!r}")
        self.tolerance = tolerance
        self.elements_at_zero = elements_at_zero
        self.method = method
        self.max_qhull_elements = max_qhull_elements
        self._entries: dict[str, tuple[Chemsys, np.ndarray, float]] = {}
        self._systems: dict[Chemsys, _System] = {}
        self.results: dict[str, HullRecord] = {}
        """Entry id → :class:`HullRecord` for every entry with a complete hull."""
        self.skipped: dict[str, str] = {}
        """Entry id → why it has no hull (a missing elemental reference)."""
        self.last_update: dict[str, int] = {}
        """Counts of the last update: systems solved and moved, ids changed."""
        self.add_entries(entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def chemical_systems(self) -> list[str]:
        """The chemical systems that hold entries, as ``"Fe-Li-O"`` strings."""
        return ["-".join(t) for t in self._systems]

    def add_entries(self, entries: Iterable[EntryLike]) -> set[str]:
        """Add (or replace, by id) entries and update every hull they can move.

        Only supersets-or-equal of the systems that gained entries are candidates,
        and of those only systems with new entries or with a subsystem whose hull
        vertices changed are solved again: a new stable Li–O phase updates Li–Fe–O,
        an unstable one touches nothing beyond Li–O.

        Returns
        -------
        set of str
            Ids whose record changed (or appeared, or became skipped).
        """
        changed: set[Chemsys] = set()
        for item in entries:
            entry_id, comp, energy = _unpack(item)
            chemsys, x = _fractional(comp)
            if entry_id in self._entries:  # a replacement leaves its old system
                old = self._systems[self._entries[entry_id][0]]
                old.ids.remove(entry_id)
                old.arrays = None
                changed.add(old.elements)
            self._entries[entry_id] = (chemsys, x, float(energy))
            system = self._systems.setdefault(chemsys, _System(chemsys))
            system.ids.append(entry_id)
            system.arrays = None
            changed.add(chemsys)
        moved = set()
        for chemsys in [c for c in changed if not self._systems[c].ids]:
            changed.discard(chemsys)
            if self._systems.pop(chemsys).signature != ():
                moved.add(chemsys)
        return self._update(changed, moved)

    def hull_energy(self, composition: CompositionLike) -> float | None:
        """Energy (eV/atom) of the current hull at any composition; None if none.

        For candidates that are not entries, e.g. a predicted decomposition energy
        ``E_pred - hull_energy(c)`` against the current hull.
        """
        chemsys, x = _fractional(composition)
        refs = self._refs(chemsys)
        if refs is None or len(chemsys) == 1:
            return None if refs is None else float(refs[0])
        xb, eb = self._boundary(chemsys, refs)
        own = self._systems.get(chemsys)
        if own is not None and own.vertices is not None and len(own.vertices[1]):
            xv, ev = own.vertices
            xb, eb = np.vstack([xb, xv]), np.concatenate([eb, ev - xv @ refs])
        method = self._method_for(len(chemsys))
        value = hull_energies([(xb, eb, x[None, :])], method)[0][0]
        return float(min(value, 0.0) + x @ refs)

    # -------------------------------------------------------------- internals

    def _method_for(self, k: int) -> Literal["qhull", "lp"]:
        if self.method == "auto":
            return "qhull" if k <= self.max_qhull_elements else "lp"
        return self.method

    def _update(self, changed: set[Chemsys], moved: set[Chemsys]) -> set[str]:
        changed_ids: set[str] = set()
        solved = 0
        order = sorted(self._systems, key=lambda t: (len(t), t))
        for k, level in itertools.groupby(order, key=len):
            # systems of one size never depend on each other: solve them as a batch
            todo = [self._systems[t] for t in level if t in changed
                    or any(sub in moved for sub in _proper_subsystems(t))]
            before = [s.signature for s in todo]
            if k == 1:
                for system in todo:
                    changed_ids |= self._solve_unary(system)
            else:
                changed_ids |= self._solve_level(todo)
            solved += len(todo)
            moved.update(s.elements for s, b in zip(todo, before) if s.signature != b)
        self.last_update = {"systems_solved": solved, "systems_moved": len(moved),
                            "ids_changed": len(changed_ids)}
        logger.debug("hull update: %s", self.last_update)
        return changed_ids

    def _arrays(self, system: _System) -> tuple[np.ndarray, np.ndarray]:
        if system.arrays is None:
            rows = [self._entries[i] for i in system.ids]
            system.arrays = (np.array([r[1] for r in rows]),
                             np.array([r[2] for r in rows]))
        return system.arrays

    def _refs(self, chemsys: Chemsys) -> np.ndarray | None:
        refs = []
        for el in chemsys:
            unary = self._systems.get((el,))
            cands = [] if unary is None or unary.ref is None else [unary.ref]
            cands += [0.0] * self.elements_at_zero
            if not cands:
                return None
            refs.append(min(cands))
        return np.array(refs)

    def _boundary(
        self, chemsys: Chemsys, refs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corners plus the vertices of every proper subsystem, formation basis."""
        k = len(chemsys)
        col = {el: i for i, el in enumerate(chemsys)}
        xs, es = [np.eye(k)], [np.zeros(k)]
        for sub in _proper_subsystems(chemsys, smallest=2):
            system = self._systems.get(sub)
            if system is None or system.vertices is None or not len(system.vertices[1]):
                continue
            xv, ev = system.vertices
            x = np.zeros((len(ev), k))
            x[:, [col[el] for el in sub]] = xv
            xs.append(x)
            es.append(ev - x @ refs)
        return np.vstack(xs), np.concatenate(es)

    def _solve_unary(self, system: _System) -> set[str]:
        _, e = self._arrays(system)
        system.ref = min([float(e.min())] + [0.0] * self.elements_at_zero)
        system.signature = system.ref
        new = {}
        for entry_id, energy in zip(system.ids, e):
            a = max(float(energy) - system.ref, 0.0)
            st = a <= self.tolerance
            # as pymatgen: an element's phase-separation energy is its e_above_hull
            new[entry_id] = HullRecord(a, a, a if st else None, system.ref, st)
        return self._store(system, new)

    def _solve_level(self, todo: list[_System]) -> set[str]:
        changed_ids: set[str] = set()
        inputs, ready = [], []
        for system in todo:
            if (refs := self._refs(system.elements)) is None:
                missing = [el for el in system.elements if self._refs((el,)) is None]
                reason = (f"no elemental reference for {', '.join(missing)} "
                          f"in {'-'.join(system.elements)}")
                system.vertices, system.signature = None, ()
                changed_ids |= self._store(system, {}, reason)
                continue
            x, e = self._arrays(system)
            shift = x @ refs
            inputs.append((*self._boundary(system.elements, refs), x, e - shift))
            ready.append((system, shift))
        if not inputs:
            return changed_ids
        method = self._method_for(len(todo[0].elements))
        sols = solve_systems(inputs, tolerance=self.tolerance, method=method)
        for (system, shift), sol in zip(ready, sols):
            x, e = self._arrays(system)
            system.vertices = (x[sol.vertex], e[sol.vertex])
            system.signature = tuple(sorted(
                (system.ids[i], float(e[i])) for i in np.flatnonzero(sol.vertex)))
            new = {}
            for i, entry_id in enumerate(system.ids):
                e_form = e[i] - shift[i]
                a = max(float(e_form - sol.hull[i]), 0.0)
                hull = float(sol.hull[i] + shift[i])
                if a <= self.tolerance:
                    ps = float(e_form - sol.hull_without[i])
                    new[entry_id] = HullRecord(a, ps, ps, hull, True)
                else:
                    new[entry_id] = HullRecord(a, a, None, hull, False)
            changed_ids |= self._store(system, new)
        return changed_ids

    def _store(
        self, system: _System, new: dict[str, HullRecord], reason: str | None = None
    ) -> set[str]:
        changed = set()
        for entry_id in system.ids:
            if reason is not None:
                had = self.results.pop(entry_id, None) is not None
                if had or self.skipped.get(entry_id) != reason:
                    changed.add(entry_id)
                self.skipped[entry_id] = reason
            else:
                self.skipped.pop(entry_id, None)
                if not _same(self.results.get(entry_id), new[entry_id]):
                    changed.add(entry_id)
                self.results[entry_id] = new[entry_id]
        if reason is not None:
            logger.debug("%d entries skipped: %s", len(system.ids), reason)
        return changed


def compute_hull(
    entries: Iterable[EntryLike], **kwargs: object
) -> dict[str, HullRecord]:
    """Hull records of ``entries`` in one call (``kwargs`` go to the engine)."""
    return HullEngine(entries, **kwargs).results  # type: ignore[arg-type]


def _unpack(item: EntryLike) -> tuple[str, CompositionLike, float]:
    if isinstance(item, tuple):
        entry_id, comp, energy = item
        return str(entry_id), comp, float(energy)
    # HullEntry and pymatgen entries share these attribute names
    if item.entry_id is None:
        raise ValueError(f"entry without an entry_id: {item}")
    return str(item.entry_id), item.composition, float(item.energy_per_atom)


def _fractional(composition: CompositionLike) -> tuple[Chemsys, np.ndarray]:
    amounts = parse_composition(composition)
    chemsys, total = tuple(sorted(amounts)), sum(amounts.values())
    return chemsys, np.array([amounts[el] / total for el in chemsys])


def _proper_subsystems(chemsys: Chemsys, smallest: int = 1) -> Iterable[Chemsys]:
    for r in range(smallest, len(chemsys)):
        yield from itertools.combinations(chemsys, r)


def _same(a: HullRecord | None, b: HullRecord, atol: float = 1e-12) -> bool:
    """Equal records; float noise below ``atol`` eV/atom is not a change."""
    if a is None or a.stable != b.stable:
        return False  # the phase-separation energy is set exactly when stable
    pairs = [(a.e_above_hull, b.e_above_hull), (a.hull_energy, b.hull_energy),
             (a.decomposition_energy, b.decomposition_energy)]
    return all(abs(p - q) <= atol for p, q in pairs)
