"""Small helpers shared by the stage Makers (no science here)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB

logger = logging.getLogger(__name__)


def campaign_db(config: CampaignConfig) -> CampaignDB:
    """The campaign collections for ``config`` (indexes ensured)."""
    from flywheel.db.stores import CampaignDB

    db = CampaignDB(config.database.uri, config.name)
    db.ensure_indexes()
    return db


def structure_fields(structure: Structure) -> dict[str, Any]:
    """The searchable fields every stored structure carries."""
    comp = structure.composition
    elements = sorted(el.symbol for el in comp.elements)
    return {
        "formula": comp.reduced_formula,
        "chemsys": "-".join(elements),
        "nelements": len(elements),
        "nsites": len(structure),
    }


def limit_threads() -> None:
    """Apply the settings' thread count to torch (workers share small machines)."""
    import os

    from flywheel.settings import get_settings

    n = get_settings().NUM_THREADS
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    import torch

    torch.set_num_threads(n)
