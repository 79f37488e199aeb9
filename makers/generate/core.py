"""Candidate generation by data-mined ion substitution, and structural deduplication.

Pure functions over pymatgen objects; the jobflow Makers wrapping them live elsewhere.

Substitution uses the Hautier et al. (2011) substitution probabilities shipped with
pymatgen through ``Substitutor.pred_from_structures`` (~ms per call), never
``SubstitutionPredictor.composition_prediction`` (tens of seconds per composition).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from monty.json import MSONable
from pymatgen.core import Composition, Element, Species, Structure

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.analysis.structure_prediction.substitution_probability import (
        SubstitutionProbability,
    )
    from pymatgen.analysis.structure_prediction.substitutor import Substitutor

__all__ = ["Candidate", "dedup", "default_matcher", "substitution_candidates"]

logger = logging.getLogger(__name__)

# λ of element pairs never seen substituting in the element-level model.  The ionic
# model's default (-5) spread over ~90 elements instead of ~230 ions would give e.g.
# Fe -> O in metallic LiFe a conditional probability of ~3e-3, above the default
# threshold; -10 makes unseen pairs negligible.
_ELEMENT_ALPHA = -10.0


@dataclass
class Candidate(MSONable):
    """A generated candidate structure.

    Attributes
    ----------
    structure
        Candidate structure without oxidation states.
    generator
        Name of the generator, e.g. ``"substitution"``.
    parent_id
        Identifier of the parent structure, if any.
    substitution
        Replacements applied to the parent, original -> new.  Element symbols
        (``{"Na": "K"}``) when every original element went to one new element,
        species strings (``{"Fe2+": "Co2+", "Fe3+": "Mn3+"}``) otherwise.  Unchanged
        elements are not listed.
    source
        Free-form provenance, e.g. a seed's ``"prototype:AB_cF8_225_a_b"``.
    probability
        Substitution probability of the model that produced the candidate.
    reference_id
        For a recomputed hull reference (generator ``"reference"``): its source id,
        e.g. ``"mp-19419"``.
    """

    structure: Structure
    generator: str = "substitution"
    parent_id: str | None = None
    substitution: dict[str, str] | None = None
    source: str | None = None
    probability: float | None = None
    reference_id: str | None = None

    @property
    def is_reference(self) -> bool:
        """A one-element seed or a recomputed hull reference: bounded by neither
        ``chemistry.max_sites`` nor ``seeds.max_seeds`` (the hull needs them)."""
        return self.generator == "reference" or (
            self.generator == "seed" and len(self.structure.composition.elements) == 1
        )

    @property
    def formula(self) -> str:
        """Reduced formula, e.g. ``"KCl"``."""
        return self.structure.composition.reduced_formula

    @property
    def chemsys(self) -> str:
        """Chemical system, elements sorted alphabetically, e.g. ``"Cl-K"``."""
        return "-".join(sorted(el.symbol for el in self.structure.composition.elements))


# ------------------------------------------------------------ substitution models
@functools.lru_cache(maxsize=1)
def _ionic_model() -> SubstitutionProbability:
    from pymatgen.analysis.structure_prediction.substitution_probability import (
        SubstitutionProbability,
    )

    # Holding a strong reference matters: pymatgen caches the instance in a
    # WeakValueDictionary, and rebuilding it costs ~1.5 s.
    return SubstitutionProbability()


@functools.lru_cache(maxsize=1)
def _element_lambda_table() -> tuple[tuple[str, str, float], ...]:
    """Element-level λ table: for each element pair, the largest λ over their ions.

    Only ions of the same sign count (cation-cation, anion-anion).

    Species carry oxidation state 0 (``"Fe0+"``), so the Substitutor's charge-balance
    test passes trivially.  Used for parents without a usable oxidation-state
    assignment (metals, intermetallics, elements).
    """
    spec = importlib.util.find_spec("pymatgen.core.structure_prediction")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pymatgen substitution data (lambda.json) not found")
    path = Path(spec.submodule_search_locations[0]) / "data" / "lambda.json"
    with open(path) as handle:
        table = json.load(handle)
    best: dict[tuple[str, str], float] = {}
    for s1, s2, lam in table:
        if "D1+" in (s1, s2):  # skipped by SubstitutionProbability as well
            continue
        sp1, sp2 = Species.from_str(s1), Species.from_str(s2)
        if sp1.oxi_state * sp2.oxi_state <= 0:
            # Cation <-> anion pairs exist in the table (Li+ <-> O2- has λ = 3.6); the
            # ionic model's charge balance removes them, the element model cannot.
            continue
        key = tuple(sorted((sp1.symbol, sp2.symbol)))
        best[key] = max(best.get(key, -math.inf), float(lam))
    return tuple((f"{a}0+", f"{b}0+", lam) for (a, b), lam in sorted(best.items()))


@functools.lru_cache(maxsize=1)
def _element_model() -> SubstitutionProbability:
    from pymatgen.analysis.structure_prediction.substitution_probability import (
        SubstitutionProbability,
    )

    table = [list(row) for row in _element_lambda_table()]
    return SubstitutionProbability(lambda_table=table, alpha=_ELEMENT_ALPHA)


@functools.lru_cache(maxsize=16)
def _substitutor(threshold: float, element_level: bool) -> Substitutor:
    from pymatgen.analysis.structure_prediction.substitutor import Substitutor

    if element_level:
        return Substitutor(threshold=threshold, alpha=_ELEMENT_ALPHA,
                           lambda_table=[list(row) for row in _element_lambda_table()])
    return Substitutor(threshold=threshold)


def _with_oxidation_states(structure: Structure) -> tuple[Structure, bool]:
    """Decorate with oxidation states the ionic model knows; else fall back to elements.

    Order of attempts: oxidation states already on the structure; the most probable
    integer guess of ``Composition.oxi_state_guesses``; bond valence
    (``BVAnalyzer``), which resolves mixed valence such as Fe3O4 site by site.  If
    none gives species in the ionic λ table, every site gets oxidation state 0 and
    the element-level model is used.

    Returns
    -------
    tuple
        (decorated copy, whether the element-level model applies).
    """
    ionic_species = _ionic_model().species
    comp = structure.composition
    if all(getattr(sp, "oxi_state", None) is not None for sp in comp):
        if set(comp) <= ionic_species:
            return structure.copy(), False
    plain = structure.copy()
    plain.remove_oxidation_states()
    attempts = []
    try:
        guesses = plain.composition.oxi_state_guesses(max_sites=-1)
    except ValueError:
        guesses = ()
    for guess in guesses:
        if all(float(v).is_integer() for v in guess.values()):
            attempts.append(lambda s, g=guess: s.add_oxidation_state_by_element(g))
            break
    if not all(el.is_metal for el in plain.composition.elements):
        attempts.append(_bond_valence)  # pointless (and slow on big cells) for metals
    for attempt in attempts:
        decorated = plain.copy()
        try:
            decorated = attempt(decorated) or decorated
        except Exception as exc:
            logger.debug("oxidation-state assignment failed: %s", exc)
            continue
        if set(decorated.composition) <= ionic_species:
            return decorated, False
    decorated = plain.copy()
    decorated.add_oxidation_state_by_element({el.symbol: 0 for el in plain.composition})
    return decorated, True


def _bond_valence(structure: Structure) -> Structure:
    from pymatgen.analysis.bond_valence import BVAnalyzer

    return BVAnalyzer().get_oxi_state_decorated_structure(structure)


def _rescale(child: Structure, parent: Structure, element_level: bool) -> Structure:
    """Child scaled to a volume estimate from its parent; unscaled if that fails.

    Ionic: reference lattice scaling with Shannon radii (``RLSVolumePredictor``).
    Element level: ratio of summed elemental solid volumes (Vegard-like); Slater
    atomic radii would e.g. shrink bcc Fe -> Li to 13 Å^3/atom instead of ~22.
    """
    from pymatgen.analysis.structure_prediction.volume_predictor import (
        RLSVolumePredictor,
    )

    from flywheel.makers.generate.structures import atomic_volume

    scaled = child.copy()
    if element_level:
        def _total(s: Structure) -> float:
            return sum(atomic_volume(Element(sp.symbol)) * n
                       for sp, n in s.composition.items())

        scaled.scale_lattice(parent.volume * _total(child) / _total(parent))
        return scaled
    predictor = RLSVolumePredictor(check_isostructural=False, radii_type="ionic-atomic",
                                   use_bv=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # warns when falling back to atomic radii
            volume = predictor.predict(child, parent)
    except (ValueError, TypeError) as exc:  # missing radii
        logger.debug("no volume estimate for %s: %s", child.formula, exc)
        return scaled
    if math.isfinite(volume) and volume > 0:
        scaled.scale_lattice(volume)
    return scaled


def _target_sets(
    model: SubstitutionProbability, parent_species: Sequence[Species],
    targets: Sequence[Species], threshold: float,
) -> list[tuple[Species, ...]]:
    """Distinct target-species sets reachable with probability above ``threshold``.

    ``pred_from_structures`` wants the full set of species of the product and tries
    all its permutations itself, so only the sets are enumerated here (branch and
    bound on the product of conditional probabilities, each of which is <= 1).
    """
    options = [[(t, p) for t in targets if (p := model.cond_prob(t, s)) > threshold]
               for s in parent_species]
    found: set[frozenset[Species]] = set()

    def _walk(i: int, chosen: tuple[Species, ...], prob: float) -> None:
        if i == len(options):
            if tuple(chosen) != tuple(parent_species):
                found.add(frozenset(chosen))
            return
        for t, p in options[i]:
            if t not in chosen and prob * p > threshold:
                _walk(i + 1, (*chosen, t), prob * p)

    _walk(0, (), 1.0)
    ordered = [tuple(sorted(s, key=str)) for s in found]
    return sorted(ordered, key=lambda s: [str(x) for x in s])


def _mapping(parent: Structure, child: Structure) -> dict[str, str] | None:
    """Original -> new replacements (element level if unambiguous); None: no change."""
    species: dict[Species, Species] = {}
    for a, b in zip(parent.species, child.species, strict=True):
        species[a] = b
    by_element: dict[str, set[str]] = defaultdict(set)
    for a, b in species.items():
        by_element[a.symbol].add(b.symbol)
    if all(len(v) == 1 and a in v for a, v in by_element.items()):
        return None  # only oxidation states moved (e.g. Fe2+ <-> Fe3+): same crystal
    if all(len(v) == 1 for v in by_element.values()):
        return {a: b for a, (b,) in sorted(by_element.items()) if b != a}
    pairs = sorted(species.items(), key=lambda kv: str(kv[0]))
    return {str(a): str(b) for a, b in pairs if a != b}


def substitution_candidates(
    parents: Iterable[tuple[str, Structure]],
    allowed_elements: Iterable[str],
    *,
    threshold: float = 1e-3,
    max_elements: int = 4,
    max_per_parent: int | None = None,
    max_sites: int = 40,
    scale_volume: bool = True,
) -> list[Candidate]:
    """Propose new structures by data-mined ion substitution into parent structures.

    For every parent, species are decorated with oxidation states (see
    ``_with_oxidation_states``); parents without a usable assignment (metals,
    intermetallics, elements) use an element-level model whose λ for an element pair
    is the largest λ over their ions.  Every set of target species drawn from
    ``allowed_elements`` whose substitution probability (product of conditional
    probabilities) exceeds ``threshold`` is passed to
    ``Substitutor.pred_from_structures``, which keeps charge-balanced products.  A
    parent's elements not in ``allowed_elements`` must therefore be replaced.  The
    number of species is preserved, so two species never merge into one.

    Parameters
    ----------
    parents
        ``(parent_id, structure)`` pairs.
    allowed_elements
        Elements a candidate may contain.
    threshold
        Minimum substitution probability; a higher threshold gives a subset.
    max_elements
        Parents with more elements are skipped (substitution keeps the count).
    max_per_parent
        Keep only the most probable candidates of each parent.
    max_sites
        Parents with more sites are skipped.
    scale_volume
        Rescale each candidate from its parent's volume (ionic radii, or elemental
        volumes for the element-level model; see ``_rescale``) so that e.g. Na -> K
        does not leave K squeezed into NaCl's cell.

    Returns
    -------
    list of Candidate
        Parents in input order, each parent's candidates by decreasing probability
        (ties by formula and mapping).  Structures carry no oxidation states.
        Duplicates are not removed; see :func:`dedup`.
    """
    allowed = {Element(e).symbol for e in allowed_elements}
    out: list[Candidate] = []
    for parent_id, structure in parents:
        n_el = len(structure.composition.element_composition.elements)
        if len(structure) > max_sites or n_el > max_elements:
            logger.info("skipping parent %s: %d sites, %d elements (limits %d, %d)",
                        parent_id, len(structure), n_el, max_sites, max_elements)
            continue
        if not structure.is_ordered:
            logger.info("skipping parent %s: disordered", parent_id)
            continue
        decorated, element_level = _with_oxidation_states(structure)
        model = _element_model() if element_level else _ionic_model()
        parent_species = sorted(set(decorated.species), key=str)
        if not set(parent_species) <= model.species:  # e.g. noble gases: no λ data
            logger.info("skipping parent %s: no substitution data for %s", parent_id,
                        sorted(map(str, set(parent_species) - model.species)))
            continue
        targets = sorted((sp for sp in model.species if sp.symbol in allowed), key=str)
        substitutor = _substitutor(threshold, element_level)
        found: list[Candidate] = []
        for target_set in _target_sets(model, parent_species, targets, threshold):
            predictions = substitutor.pred_from_structures(
                list(target_set), [{"structure": decorated, "id": parent_id}],
                remove_duplicates=False)
            for ts in predictions:
                child = ts.final_structure
                mapping = _mapping(decorated, child)
                if mapping is None:
                    continue
                child = (_rescale(child, decorated, element_level) if scale_volume
                         else child.copy())
                child.remove_oxidation_states()
                if len(child.composition.elements) > max_elements:
                    continue
                found.append(Candidate(structure=child, generator="substitution",
                                       parent_id=parent_id, substitution=mapping,
                                       probability=float(ts.other_parameters["proba"])))
        found.sort(key=lambda c: (-c.probability, c.formula,
                                  sorted(c.substitution.items())))
        out.extend(found[:max_per_parent] if max_per_parent is not None else found)
    return out


# ---------------------------------------------------------------------- dedup
def default_matcher() -> StructureMatcher:
    """StructureMatcher used for deduplication (ltol 0.2, stol 0.3, angle_tol 5°).

    ``primitive_cell``, ``scale`` and ``attempt_supercell`` are on, so symmetry
    copies, translations, rotations, supercells and volume-scaled copies match.
    """
    from pymatgen.analysis.structure_matcher import ElementComparator, StructureMatcher

    return StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5, primitive_cell=True,
                            scale=True, attempt_supercell=True,
                            comparator=ElementComparator())


def _element_formula(structure: Structure) -> str:
    return Composition(structure.composition.element_composition).reduced_formula


def dedup(
    candidates: Sequence[Candidate],
    known: Iterable[Structure] = (),
    matcher: StructureMatcher | None = None,
) -> tuple[list[Candidate], int, int]:
    """Remove candidates that duplicate a known structure or an earlier candidate.

    Structures are bucketed by reduced formula (oxidation states ignored) and only
    compared with ``matcher`` (default :func:`default_matcher`) inside a bucket.  A
    candidate is first compared with the known structures, then with the unique
    candidates accepted before it, so the first occurrence in input order survives.

    Parameters
    ----------
    candidates
        Candidates to deduplicate.
    known
        Structures that already exist (e.g. the database); never returned.
    matcher
        Structure matcher; the default compares elements only.

    Returns
    -------
    tuple
        (unique candidates in input order, number of duplicates within the batch,
        number of duplicates of ``known``).
    """
    matcher = matcher or default_matcher()
    primitive = getattr(matcher, "_primitive_cell", True)

    def _reduced(structure: Structure) -> Structure:
        # Reduce once (as StructureMatcher does: Niggli, then primitive) and fit with
        # skip_structure_reduction; re-reducing on every fit was 1/3 of the time.
        reduced = structure.get_reduced_structure(reduction_algo="niggli")
        return reduced.get_primitive_structure() if primitive else reduced

    def _fit(a: Structure, b: Structure) -> bool:
        return matcher.fit(a, b, skip_structure_reduction=True)

    candidate_formulas = {_element_formula(c.structure) for c in candidates}
    known_by_formula: dict[str, list[Structure]] = defaultdict(list)
    for structure in known:
        formula = _element_formula(structure)
        if formula in candidate_formulas:  # other buckets are never compared
            known_by_formula[formula].append(_reduced(structure))
    unique_by_formula: dict[str, list[Structure]] = defaultdict(list)
    unique: list[Candidate] = []
    n_batch = n_known = 0
    for candidate in candidates:
        formula = _element_formula(candidate.structure)
        reduced = _reduced(candidate.structure)
        if any(_fit(reduced, k) for k in known_by_formula.get(formula, ())):
            n_known += 1
        elif any(_fit(reduced, u) for u in unique_by_formula[formula]):
            n_batch += 1
        else:
            unique_by_formula[formula].append(reduced)
            unique.append(candidate)
    logger.info("dedup: %d unique, %d duplicates within batch, %d duplicates of known",
                len(unique), n_batch, n_known)
    return unique, n_batch, n_known
