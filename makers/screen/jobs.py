"""Run a screen over a campaign's materials and store each verdict on the material.

``flywheel screen layered|li-conductor`` calls :func:`run_screen` in its own process
(the screens take well under a second per structure: no MD, no oracle). Verdicts go
to ``materials.screens.<name>``, so ``flywheel query --layered`` /
``--li-conductor`` and any MongoDB query can select on them.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB

logger = logging.getLogger(__name__)

SCREENS = ("layered", "li-conductor")


def field_name(screen: str) -> str:
    """The ``materials.screens`` key of a screen (``li-conductor`` -> ``li_conductor``)."""
    return screen.replace("-", "_")


def run_screen(db: CampaignDB, config: CampaignConfig, screen: str,
               selection: dict[str, Any] | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Screen the materials matching ``selection`` (default: the discoveries).

    Returns counts: ``screened``, ``passed`` and the ids that passed.
    """
    from pymatgen.core import Structure
    from pymongo import UpdateOne

    from flywheel.makers.screen.core import layered, li_conductor

    if screen not in SCREENS:
        raise ValueError(f"unknown screen {screen!r}; choose from {', '.join(SCREENS)}")
    q = {"discovery": True} if selection is None else dict(selection)
    docs = list(db.materials.find(
        db.q(**q), {"material_id": 1, "structure": 1, "stable": 1, "band_gap": 1})
        .sort("material_id", 1))
    key = field_name(screen)
    ops, passed = [], []
    items = docs
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(docs, desc=f"screen {screen}", unit="material")
    start = time.perf_counter()
    for d in items:
        s = Structure.from_dict(d["structure"])
        if screen == "layered":
            verdict = layered(s)
            ok = verdict["layered"]
        else:
            verdict = li_conductor(s, stable=bool(d.get("stable")),
                                   band_gap=d.get("band_gap"))
            ok = verdict["candidate"]
        verdict["time"] = time.time()
        ops.append(UpdateOne(db.q(material_id=d["material_id"]),
                             {"$set": {f"screens.{key}": verdict}}))
        if ok:
            passed.append(d["material_id"])
    db.bulk_write("materials", ops)
    logger.info("screen %s: %d of %d pass", screen, len(passed), len(docs))
    return {"screen": screen, "screened": len(docs), "passed": len(passed),
            "passed_ids": passed, "seconds": time.perf_counter() - start}
