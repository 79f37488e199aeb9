"""MD ionic-conductivity screening as a jobflow flow: select, one MD job per material
and temperature (gpu), one Arrhenius fit (cpu).

``flywheel conductivity CAMPAIGN.yaml`` submits it to the campaign's LaunchPad (the
jobs: :mod:`flywheel.makers.conductivity.jobs`; the science:
:mod:`flywheel.makers.conductivity.core`; docs/conductivity.md). Runs already stored
for the same settings are not repeated, so a second screen after more rounds only
computes what is new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Maker, Response, job

from flywheel.db.tags import CPU, GPU, tag_job
from flywheel.makers.common import campaign_db
from flywheel.makers.conductivity.jobs import (
    STAGE,
    ConductivityFitMaker,
    ConductivityMDMaker,
    settings_key,
)

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig

logger = logging.getLogger(__name__)


def select_materials(db: Any, config: CampaignConfig, material_ids: list[str] | None,
                     selection: dict[str, Any] | None) -> tuple[list[str], dict[str, str]]:
    """The ids to screen and, for the others considered, why they were skipped.

    Explicit ``material_ids`` (campaign results or reference ids) are taken as given;
    otherwise the ``materials`` matching ``selection`` (default: the discoveries),
    lowest energy above hull first. Materials without the mobile ion are skipped;
    at most ``conductivity.max_materials`` are kept.
    """
    specie = config.conductivity.specie
    skipped: dict[str, str] = {}
    if material_ids:
        docs = []
        for mid in material_ids:
            d = db.materials.find_one(db.q(material_id=mid), {"formula": 1, "chemsys": 1})
            if d is None:
                d = db.references.find_one(db.q(entry_id=mid),
                                           {"formula": 1, "chemsys": 1})
            if d is None:
                skipped[mid] = "not in this campaign's materials or references"
                continue
            docs.append({"material_id": mid, **d})
    else:
        q = {"discovery": True} if selection is None else dict(selection)
        docs = list(db.materials.find(db.q(**q), {"material_id": 1, "chemsys": 1})
                    .sort([("e_above_hull", 1), ("material_id", 1)]))
    from pymatgen.core import Structure

    from flywheel.makers.conductivity.core import make_supercell
    from flywheel.makers.conductivity.jobs import find_structure, md_settings

    settings = md_settings(config.conductivity)
    ids = []
    for d in docs:
        mid = d["material_id"]
        if specie not in d["chemsys"].split("-"):
            skipped[mid] = f"no {specie}"
        elif d["chemsys"] == specie:
            skipped[mid] = "elemental: no host framework"
        elif len(ids) >= config.conductivity.max_materials:
            skipped[mid] = "over conductivity.max_materials"
        else:
            try:  # refuse here what the MD job would refuse (supercell size)
                make_supercell(Structure.from_dict(find_structure(db, mid)[0]),
                               settings)
            except (KeyError, ValueError) as err:
                skipped[mid] = str(err).strip("'\"")
                continue
            ids.append(mid)
    return ids, skipped


@dataclass
class ConductivityMaker(Maker):
    """Select the materials, then add the MD runs and the fit to the workflow.

    Parameters
    ----------
    name
        Job name.
    material_ids
        Screen exactly these (campaign results or reference ids such as ``mp-…``).
    selection
        Otherwise a ``materials`` filter (``db.queries.material_filter``); default the
        discoveries.
    """

    name: str = "conductivity select"
    material_ids: list[str] = field(default_factory=list)
    selection: dict[str, Any] | None = None

    @job
    def make(self, config: CampaignConfig) -> Response:
        """Choose the set and expand into MD and fit jobs."""
        db = campaign_db(config)
        ids, skipped = select_materials(db, config, self.material_ids, self.selection)
        for mid, why in skipped.items():
            logger.info("conductivity: skipping %s (%s)", mid, why)
        key = settings_key(config.conductivity)
        output = {"material_ids": ids, "skipped": skipped, "key": key}
        if not ids:
            logger.warning("conductivity: nothing to screen")
            return Response(output=output)
        runs = [
            tag_job(ConductivityMDMaker().make(config, mid, t, key), GPU, config.name,
                    None, f"{STAGE} md")
            for mid in ids for t in config.conductivity.temperatures
        ]
        fit = tag_job(ConductivityFitMaker().make(config, ids, key,
                                                  [r.output for r in runs]),
                      CPU, config.name, None, f"{STAGE} fit",
                      tolerate_failed_parents=True)
        logger.info("conductivity: %d materials x %d temperatures", len(ids),
                    len(config.conductivity.temperatures))
        return Response(output=output, replace=Flow(
            [*runs, fit], name=f"{config.name} conductivity"))


def conductivity_flow(config: CampaignConfig, material_ids: list[str] | None = None,
                      selection: dict[str, Any] | None = None):
    """The conductivity flow (one select job that expands at run time)."""
    maker = ConductivityMaker(material_ids=list(material_ids or []), selection=selection)
    return tag_job(maker.make(config), CPU, config.name, None, f"{STAGE} select")
