"""Random structure search (AIRSS-like) with pyxtal.

Each attempt draws a number of formula units Z (uniform over those with at most
``max_atoms`` atoms), then a space group uniformly among those whose Wyckoff
positions can hold that many atoms of each element
(``pyxtal.symmetry.Group.check_compatible``), and asks pyxtal for a random
symmetric crystal (its own minimum distances: ``min_distance_factor`` times the sum
of pyxtal's covalent radii).  The crystal is then rescaled to
``volume_factor`` times the sum of elemental solid volumes
(:func:`flywheel.makers.generate.structures.atomic_volume`: Li 21.6, Fe 11.8, O 17.4 Å³) and
kept only if :func:`~flywheel.makers.generate.structures.check_structure` passes with
``covalent_factor=min_distance_factor`` (no pair closer than that fraction of the
sum of Cordero covalent radii, none closer than 0.5 Å).  So every returned
structure has exactly ``Z`` times the requested composition and meets the distance
constraint at its final volume.

An optional ``prerelax`` callable (e.g. a batched MLIP relaxation) maps the accepted
structures to new ones; its results are checked again (composition and distances)
and failures dropped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Composition, Structure

from flywheel.makers.generate.core import Candidate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["compatible_space_groups", "random_structures", "target_volume"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=230)
def _group(number: int) -> Any:
    from pyxtal.symmetry import Group

    return Group(number)  # ~7 ms to build: once per process


@functools.lru_cache(maxsize=1024)
def compatible_space_groups(num_ions: tuple[int, ...]) -> tuple[int, ...]:
    """Space groups whose Wyckoff positions can hold ``num_ions`` atoms per element."""
    return tuple(g for g in range(1, 231)
                 if _group(g).check_compatible(list(num_ions))[0])


@contextlib.contextmanager
def _memoized_default_tolerance() -> Iterator[None]:
    """Share pyxtal's default ``Tol_matrix`` while generating.

    pyxtal 1.1.5 builds a fresh ``Tol_matrix(prototype="atomic")`` (a Python loop
    over 100 x 100 element pairs, ~7 ms) in every ``operations.check_images`` call,
    several per Wyckoff merge: half of the generation time.  The object is only
    read there, so one cached instance is equivalent.
    """
    import pyxtal.operations as ops

    original = ops.Tol_matrix
    ops.Tol_matrix = functools.lru_cache(maxsize=8)(original)
    try:
        yield
    finally:
        ops.Tol_matrix = original


def target_volume(composition: Composition, volume_factor: float = 1.0) -> float:
    """``volume_factor`` times the summed elemental solid volumes (Å³)."""
    from flywheel.makers.generate.structures import atomic_volume

    return volume_factor * sum(atomic_volume(el) * n
                               for el, n in composition.element_composition.items())


def _valid(structure: Structure, composition: Composition,
           min_distance_factor: float) -> str | None:
    from flywheel.makers.generate.structures import check_structure

    comp = structure.composition.element_composition
    factor = comp.num_atoms / composition.num_atoms
    if not (factor.is_integer() and comp.almost_equals(composition * factor)):
        return f"composition {comp.formula} is not a multiple of {composition.formula}"
    return check_structure(structure, covalent_factor=min_distance_factor)


def random_structures(
    composition: Composition | str,
    n: int = 100,
    *,
    seed: int = 0,
    max_attempts: int | None = None,
    volume_factor: float = 1.0,
    min_distance_factor: float = 0.7,
    max_atoms: int = 20,
    space_groups: tuple[int, ...] | None = None,
    prerelax: Callable[[list[Structure]], list[Structure]] | None = None,
) -> list[Candidate]:
    """Random symmetric crystals of ``composition`` (module docstring).

    Parameters
    ----------
    composition
        Composition or formula; reduced to its formula unit.
    n
        Number of structures wanted.
    seed
        Seeds every random choice (Z, space group, pyxtal's ``random_state``).
    max_attempts
        Give up after this many pyxtal calls (default ``20 * n``); fewer than ``n``
        structures may then come back.
    volume_factor
        Final volume relative to the summed elemental volumes.
    min_distance_factor
        Closest allowed pair, as a fraction of the sum of covalent radii.
    max_atoms
        Most atoms per cell; one formula unit is always tried, however large.
    space_groups
        Restrict the draw to these space groups (each still has to be compatible).
    prerelax
        Optional map over the accepted structures, e.g. an MLIP relaxation.

    Returns
    -------
    list of Candidate
        ``generator="rss"``, ``source="rss:<formula>:Z=<z>:sg=<number>"``.
    """
    from pyxtal import pyxtal
    from pyxtal.tolerance import Tol_matrix

    comp = Composition(Composition(composition).element_composition.reduced_formula)
    symbols = [el.symbol for el in comp.elements]
    per_unit = [int(comp[el]) for el in comp.elements]
    z_options = [z for z in range(1, max(max_atoms // sum(per_unit), 1) + 1)]
    max_attempts = 20 * n if max_attempts is None else max_attempts
    # pyxtal's "atomic" tolerance is 0.5 * factor * (r_i + r_j).
    tolerance = Tol_matrix(prototype="atomic", factor=2 * min_distance_factor)
    rng = np.random.default_rng(seed)
    volume_unit = target_volume(comp, volume_factor)

    found: list[tuple[Structure, str]] = []
    attempts, rejected = 0, 0
    while len(found) < n and attempts < max_attempts:
        attempts += 1
        z = int(rng.choice(z_options))
        num_ions = tuple(c * z for c in per_unit)
        groups = compatible_space_groups(num_ions)
        if space_groups is not None:
            groups = tuple(g for g in groups if g in space_groups)
        if not groups:
            continue
        group = int(rng.choice(groups))
        state = int(rng.integers(2**31 - 1))
        crystal = pyxtal()
        try:
            with warnings.catch_warnings(), _memoized_default_tolerance():
                warnings.simplefilter("ignore")
                crystal.from_random(3, group, symbols, list(num_ions), tm=tolerance,
                                    random_state=state)
        except Exception as exc:  # pyxtal raises many exception types on failure
            logger.debug("pyxtal failed for sg %d, %s: %s", group, num_ions, exc)
            rejected += 1
            continue
        if not crystal.valid:
            rejected += 1
            continue
        structure = crystal.to_pymatgen()
        structure.scale_lattice(volume_unit * z)
        if (reason := _valid(structure, comp, min_distance_factor)) is not None:
            logger.debug("rejected random %s (sg %d): %s", comp.formula, group, reason)
            rejected += 1
            continue
        found.append((structure, f"rss:{comp.reduced_formula}:Z={z}:sg={group}"))
    logger.info("rss %s: %d structures from %d attempts (%d rejected)",
                comp.reduced_formula, len(found), attempts, rejected)

    if prerelax is not None and found:
        relaxed = prerelax([s for s, _ in found])
        if len(relaxed) != len(found):
            raise ValueError("prerelax must return one structure per input")
        kept = []
        for (_, source), structure in zip(found, relaxed, strict=True):
            if (reason := _valid(structure, comp, min_distance_factor)) is None:
                kept.append((structure, source))
            else:
                logger.info("dropped pre-relaxed %s: %s", source, reason)
        found = kept
    return [Candidate(structure=s, generator="rss", source=source)
            for s, source in found]
