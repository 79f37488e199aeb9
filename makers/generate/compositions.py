"""Composition enumeration with strict or relaxed oxidation-state rules.

Strict charge balance (one common oxidation state per element, SMACT-like) rejects
real compounds: intermetallics and Zintl phases (Li15Si4, LiFe alloys), mixed-valence
oxides (Fe3O4), peroxides (Li2O2).  The rules here, from strict to relaxed (``rule=``):

``"strict"``
    Charge balanced with one oxidation state per element, taken from
    ``Element.icsd_oxidation_states`` (else ``common_oxidation_states``; the same
    lists ``Composition.oxi_state_guesses`` uses), with the anions (negative states)
    the most electronegative elements: every anion has a larger Pauling
    electronegativity than every cation.
``"common"``
    ``"strict"``, or *intermetallic*: every element a metal or a metalloid
    (``Element.is_metal`` or ``is_metalloid``: B Si Ge As Sb Te Po).
``"relaxed"``
    ``"common"``, or charge balanced with the anions the most electronegative
    elements, where each atom takes any known state (``Element.oxidation_states``)
    and atoms of one element may take *different* states of the same sign (mixed
    valence).  ``tolerance`` > 0 admits a net charge up to that magnitude.

Unary compositions (elements) are admitted by every rule.  Examples (tested):

=============  ======  ======  =======  ========================================
formula        strict  common  relaxed  why
=============  ======  ======  =======  ========================================
NaCl, LiFeO2   yes     yes     yes      Na+ Cl-; Li+ Fe3+ O2-
Li15Si4        no      yes     yes      Li metal, Si metalloid (Zintl phase)
LiFe           no      yes     yes      intermetallic
Fe3O4          no      no      yes      Fe2+ + 2 Fe3+ (mixed valence)
Li2O2, Li2FeO3 no      no      yes      O- (peroxide); Fe4+
NaCl2, NaCl3   no      no      no       Cl has one negative state, -1
O2F, MgF3      no      no      no       2 O need at least +2; Mg at most +2
KO2, Ag2F      no      no      no       fractional states (O2-, Ag+1/2)
=============  ======  ======  =======  ========================================

Integer states are the price of simplicity: superoxides, ozonides, polyhalides
(CsI3) and sub-valent compounds (Ag2F, Cs11O3) are rejected.  Letting metals also be
0 would admit those, but it admitted 1,258 of the 1,378 binary and ternary Li-Fe-O
amount vectors up to 20 atoms (the rule as written: 769; "common": 167; "strict":
40), i.e. no screen at all.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from typing import TYPE_CHECKING

from pymatgen.core import Composition, Element

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["RULES", "admission_reason", "enumerate_compositions", "is_admissible"]

logger = logging.getLogger(__name__)

RULES = ("strict", "common", "relaxed")


# -------------------------------------------------- reachable charge sums as bitsets
def _sumset(a: int, b: int) -> int:
    """Bitset of {x + y : x in a, y in b} (bit k set <=> k reachable)."""
    out, shift = 0, 0
    while b:
        if b & 1:
            out |= a << shift
        b >>= 1
        shift += 1
    return out


@functools.lru_cache(maxsize=65536)
def _reachable(magnitudes: frozenset[int], n: int, mixed: bool) -> int:
    """Bitset of total charge magnitudes of ``n`` atoms with states in ``magnitudes``.

    ``mixed``: each atom picks its own state; else all ``n`` atoms share one.
    """
    if not magnitudes:
        return 0
    if not mixed:
        return functools.reduce(lambda acc, m: acc | 1 << (m * n), magnitudes, 0)
    single = functools.reduce(lambda acc, m: acc | 1 << m, magnitudes, 0)
    out = 1  # zero atoms: total 0
    for _ in range(n):
        out = _sumset(out, single)
    return out


@functools.lru_cache(maxsize=256)
def _states(symbol: str, relaxed: bool) -> tuple[frozenset[int], frozenset[int], float]:
    """(cation magnitudes, anion magnitudes, electronegativity) of an element."""
    el = Element(symbol)
    if relaxed:
        states = set(el.oxidation_states)
    else:
        states = set(el.icsd_oxidation_states or el.common_oxidation_states)
    x = el.X
    if not math.isfinite(x):  # noble gases without a Pauling value
        x = math.inf
    return (frozenset(s for s in states if s >= 0),
            frozenset(-s for s in states if s < 0), x)


def _charge_balanced(amounts: dict[str, int], relaxed: bool, tolerance: int) -> bool:
    """Test for an anion/cation split (anions most electronegative), |net| <= tol."""
    info = {el: _states(el, relaxed) for el in amounts}
    order = sorted(amounts, key=lambda el: (info[el][2], el))
    if any(math.isinf(info[el][2]) for el in order):
        return False
    for cut in range(1, len(order)):
        cations, anions = order[:cut], order[cut:]
        if info[cations[-1]][2] == info[anions[0]][2]:
            continue  # equal electronegativity: neither is "more" the anion
        plus = functools.reduce(_sumset, (_reachable(info[el][0], amounts[el], relaxed)
                                          for el in cations), 1)
        minus = functools.reduce(_sumset, (_reachable(info[el][1], amounts[el], relaxed)
                                           for el in anions), 1)
        if not plus or not minus:
            continue
        window = functools.reduce(lambda acc, d: acc | minus << d | minus >> d,
                                  range(1, tolerance + 1), minus)
        if plus & window:
            return True
    return False


def _integer_amounts(composition: Composition) -> dict[str, int] | None:
    amounts = {el.symbol: amt for el, amt in composition.element_composition.items()}
    if not all(float(a).is_integer() for a in amounts.values()):
        return None
    return {el: int(a) for el, a in amounts.items()}


def admission_reason(
    composition: Composition | str, rule: str = "relaxed", *, tolerance: int = 0
) -> str | None:
    """Why ``composition`` passes ``rule``, or ``None`` if it does not.

    Parameters
    ----------
    composition
        Composition or formula; oxidation states are ignored, the amounts used are
        those given (``Fe6O8`` may balance where ``Fe3O4`` with one state per
        element does not, for ``"strict"``).  Non-integer amounts are rejected.
    rule
        ``"strict"``, ``"common"`` or ``"relaxed"`` (module docstring).
    tolerance
        Largest admitted |net charge| for the ionic tests (integer).

    Returns
    -------
    str or None
        ``"element"``, ``"ionic"`` (strict balance), ``"intermetallic"`` or
        ``"ionic (relaxed)"``; ``None``: rejected.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    comp = Composition(composition)
    amounts = _integer_amounts(comp)
    if amounts is None:
        return None
    if len(amounts) == 1:
        return "element"
    if _charge_balanced(amounts, relaxed=False, tolerance=tolerance):
        return "ionic"
    if rule == "strict":
        return None
    if all(Element(el).is_metal or Element(el).is_metalloid for el in amounts):
        return "intermetallic"
    if rule == "common":
        return None
    if _charge_balanced(amounts, relaxed=True, tolerance=tolerance):
        return "ionic (relaxed)"
    return None


def is_admissible(
    composition: Composition | str, rule: str = "relaxed", *, tolerance: int = 0
) -> bool:
    """Whether ``composition`` passes ``rule`` (see :func:`admission_reason`)."""
    return admission_reason(composition, rule, tolerance=tolerance) is not None


def _count_vectors(k: int, max_atoms: int) -> Iterator[tuple[int, ...]]:
    """Positive integer k-vectors with sum <= max_atoms and gcd 1 (reduced formulas)."""
    def _walk(prefix: tuple[int, ...], left: int) -> Iterator[tuple[int, ...]]:
        if len(prefix) == k:
            if math.gcd(*prefix) == 1:
                yield prefix
            return
        slots = k - len(prefix) - 1  # each later element needs at least one atom
        for c in range(1, left - slots + 1):
            yield from _walk((*prefix, c), left - c)

    yield from _walk((), max_atoms)


def enumerate_compositions(
    elements: Iterable[str],
    *,
    max_elements: int = 5,
    max_atoms: int = 20,
    rule: str = "relaxed",
    min_elements: int = 1,
    tolerance: int = 0,
) -> list[Composition]:
    """All reduced compositions over ``elements`` that pass ``rule``.

    Every subset of ``min_elements``..``max_elements`` distinct elements, every
    positive integer amount vector with gcd 1 and at most ``max_atoms`` atoms per
    formula unit, kept if :func:`is_admissible`.  The count grows like
    ``C(n, k) * C(max_atoms, k)``: e.g. 3 elements and 20 atoms give 1,143 ternary
    vectors before the rule.

    Parameters
    ----------
    elements
        Element symbols.
    max_elements, min_elements
        Number of distinct elements per composition.
    max_atoms
        Most atoms in the reduced formula (Li15Si4 needs 19).
    rule, tolerance
        Admission rule, see :func:`admission_reason`.

    Returns
    -------
    list of Composition
        Sorted by number of elements, atoms per formula unit, then formula.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    symbols = sorted({Element(e).symbol for e in elements})
    found: list[tuple[int, int, str, Composition]] = []
    n_tested = 0
    for k in range(max(min_elements, 1), min(max_elements, len(symbols)) + 1):
        for subset in itertools.combinations(symbols, k):
            for counts in _count_vectors(k, max_atoms):
                n_tested += 1
                comp = Composition(dict(zip(subset, counts, strict=True)))
                if is_admissible(comp, rule, tolerance=tolerance):
                    found.append((k, sum(counts), comp.reduced_formula, comp))
    found.sort(key=lambda t: t[:3])
    logger.info("enumerated %d of %d compositions over %s (rule %s)", len(found),
                n_tested, "-".join(symbols), rule)
    return [t[3] for t in found]
