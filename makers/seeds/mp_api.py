"""Reference entries from the Materials Project API (optional ``mp-api`` dependency).

The client is injected at one seam (``client_factory``) so tests use a stand-in; the
entries go through the same corrections as files (:func:`~flywheel.makers.seeds.sources.
apply_corrections`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from flywheel.makers.seeds.sources import (
    EntryReport,
    _normalize_elements,
    apply_corrections,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from pymatgen.entries.compatibility import Compatibility

__all__ = ["mp_api_entries"]

logger = logging.getLogger(__name__)


def _default_client_factory() -> Callable[[str], Any]:
    try:
        from mp_api.client import MPRester
    except ImportError as exc:
        raise ImportError(
            "the Materials Project API client is not installed: install mp-api "
            "(`pip install mp-api`) to fetch reference entries from the Materials "
            "Project, or load them from a ComputedStructureEntry JSON file instead"
        ) from exc
    return lambda api_key: MPRester(api_key)


def mp_api_entries(
    chemsys_elements: Iterable[str] | str,
    api_key: str | None = None,
    client_factory: Callable[[str], Any] | None = None,
    *,
    compatibility: str | Compatibility | None = "MP2020",
    additional_criteria: dict[str, Any] | None = None,
) -> EntryReport:
    """All Materials Project entries of a chemical system and its subsystems.

    Calls ``MPRester(api_key).get_entries_in_chemsys(elements,
    compatible_only=True, additional_criteria=...)`` (mp-api's signature:
    ``get_entries_in_chemsys(elements, use_gibbs=None, compatible_only=True,
    inc_structure=None, property_data=None, conventional_unit_cell=False,
    additional_criteria=None)``; its default ``additional_criteria`` selects the
    mixed GGA/GGA+U thermo type).  The server returns MP2020-corrected entries;
    with ``compatibility="MP2020"`` they are re-corrected locally with
    ``clean=True`` (idempotent), so API, JSON and campaign entries go through the
    same pymatgen code; refused entries are in ``rejected``.

    Parameters
    ----------
    chemsys_elements
        Element symbols, or a chemical system string such as ``"Li-Fe-O"``.
    api_key
        Materials Project API key; default: the ``MP_API_KEY`` environment variable.
    client_factory
        The seam to the client: a callable taking the API key and returning a
        context manager whose value has ``get_entries_in_chemsys``.  Default:
        ``mp_api.client.MPRester`` (optional dependency, imported only here).
    compatibility
        As in :func:`apply_corrections`.
    additional_criteria
        Passed through to ``get_entries_in_chemsys`` (e.g. ``{"is_stable": True}``).

    Raises
    ------
    ImportError
        If no ``client_factory`` is given and ``mp-api`` is not installed.
    ValueError
        If no API key is given or set in ``MP_API_KEY``.
    """
    elements = sorted(_normalize_elements(chemsys_elements) or ())
    if not elements:
        raise ValueError("mp_api_entries needs at least one element")
    if client_factory is None:
        client_factory = _default_client_factory()
    key = api_key or os.environ.get("MP_API_KEY")
    if not key:
        raise ValueError(
            "no Materials Project API key: pass api_key=... or set the environment "
            "variable MP_API_KEY (get a key at "
            "https://next-gen.materialsproject.org/api)"
        )
    kwargs: dict[str, Any] = {"compatible_only": True}
    if additional_criteria is not None:
        kwargs["additional_criteria"] = additional_criteria
    with client_factory(key) as client:
        fetched = list(client.get_entries_in_chemsys(elements, **kwargs))
    chemsys = "-".join(elements)
    report = apply_corrections(
        fetched, compatibility, inplace=True, source=f"mp-api:{chemsys}"
    )
    logger.info("Materials Project %s: %s", chemsys, report.summary())
    return report
