"""The conductivity screen's jobs: one NVT run per (material, temperature), a fit.

The flow that selects the materials and adds these jobs is
:mod:`flywheel.workflows.conductivity`. Each MD run stores its displacements in the
GridFS bucket ``md`` and its analysis in ``md_runs`` (one document per material,
settings key and temperature: a rerun of a finished run computes nothing); the fit
writes one ``conductivity`` document per material and settings key.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from flywheel.makers.common import campaign_db, limit_threads

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig, ConductivityConfig
    from flywheel.makers.conductivity.core import MDSettings

logger = logging.getLogger(__name__)

STAGE = "conductivity"


def md_settings(cfg: ConductivityConfig) -> MDSettings:
    """The core's settings from the campaign's ``conductivity`` section."""
    from flywheel.makers.conductivity.core import MDSettings

    return MDSettings(
        temperatures=tuple(cfg.temperatures), time_step=cfg.time_step,
        equilibration_ps=cfg.equilibration_ps, production_ps=cfg.production_ps,
        sample_every=cfg.sample_every, min_length=cfg.min_length,
        max_atoms=cfg.max_atoms, specie=cfg.specie,
    )


def potential_id(potential: str) -> str:
    """``chgnet`` or ``mace:<sha256 of the file, 12 hex>`` (a moved file is the same
    potential, a retrained one is not)."""
    if potential.lower() == "chgnet":
        return "chgnet"
    path = Path(potential)
    if not path.is_file():
        raise FileNotFoundError(
            f"conductivity.potential {potential!r}: not 'chgnet' and not a file")
    return "mace:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def settings_key(cfg: ConductivityConfig) -> str:
    """A short hash of everything that changes a run's result except temperature."""
    d = md_settings(cfg).as_dict()
    d.pop("temperatures")
    d.pop("max_atoms")  # a limit on what is run, not on how
    d["potential"] = potential_id(cfg.potential)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def find_structure(db: Any, material_id: str) -> tuple[dict[str, Any], str]:
    """A campaign result or a reference (``mp-…``) by id: ``(structure dict, formula)``."""
    doc = db.materials.find_one(db.q(material_id=material_id),
                                {"structure": 1, "formula": 1})
    if doc is None:
        doc = db.references.find_one(db.q(entry_id=material_id),
                                     {"structure": 1, "formula": 1})
    if doc is None or not doc.get("structure"):
        raise KeyError(f"no material or reference {material_id!r} with a structure")
    return doc["structure"], doc["formula"]


@dataclass
class ConductivityMDMaker(Maker):
    """One NVT run of one material at one temperature (gpu category)."""

    name: str = "conductivity md"

    @job
    def make(self, config: CampaignConfig, material_id: str, temperature: float,
             key: str) -> dict[str, Any]:
        """Run (unless this material, key and temperature are already stored),
        analyse with DiffusionAnalyzer, store displacements and analysis."""
        import numpy as np
        from pymatgen.core import Structure

        from flywheel.makers.conductivity.core import (
            analyze_run,
            load_calculator,
            make_supercell,
            run_nvt,
        )
        from flywheel.settings import get_settings

        limit_threads()
        db = campaign_db(config)
        query = db.q(material_id=material_id, key=key, temperature=float(temperature))
        done = db.md_runs.find_one(query, {"_id": 0})
        if done is not None:
            logger.info("%s at %.0f K: already run", material_id, temperature)
            return {"material_id": material_id, "temperature": temperature,
                    "skipped": True}
        settings = md_settings(config.conductivity)
        structure, formula = find_structure(db, material_id)
        cell = make_supercell(Structure.from_dict(structure), settings)
        device = get_settings().resolved_device()
        calc = load_calculator(config.conductivity.potential, device)
        last = [time.monotonic()]

        def progress(done_steps: int, total: int) -> None:
            if time.monotonic() - last[0] > 60:
                last[0] = time.monotonic()
                logger.info("%s %.0f K: step %d of %d", material_id, temperature,
                            done_steps, total)

        run = run_nvt(cell, calc, float(temperature), settings, progress)
        result = analyze_run(cell, run, settings)
        buf = io.BytesIO()
        np.save(buf, run.displacements)
        # A rerun after a crash between the upload and the insert replaces the file.
        db.delete_files("md", [f["_id"] for f in db.find_files(
            "md", material_id=material_id, key=key, temperature=float(temperature))])
        file_id = db.put_file("md", f"{material_id}_{temperature:.0f}K.npy",
                              buf.getvalue(), material_id=material_id, key=key,
                              temperature=float(temperature))
        db.md_runs.update_one(query, {"$setOnInsert": {
            **query, "formula": formula, "potential": config.conductivity.potential,
            "device": device, "n_atoms": len(cell),
            "supercell_structure": cell.as_dict(), "displacements_file": file_id,
            "time_step": run.time_step, "sample_every": run.sample_every,
            "steps": run.steps, "energy_start": run.energy_start,
            "energy_end": run.energy_end, **result,
        }}, upsert=True)
        logger.info("%s %.0f K: D = %.3g cm2/s (n_eff %.0f) in %.0f s", material_id,
                    temperature, result["diffusivity"], result["n_eff"], run.seconds)
        return {"material_id": material_id, "temperature": temperature,
                "diffusivity": result["diffusivity"], "seconds": run.seconds}


@dataclass
class ConductivityFitMaker(Maker):
    """Arrhenius fit of every selected material's runs (cpu category)."""

    name: str = "conductivity fit"

    @job
    def make(self, config: CampaignConfig, material_ids: list[str], key: str,
             runs: Any = None) -> dict[str, Any]:
        """Fit; ``runs`` only orders this job after the MD jobs."""
        from pymatgen.core import Structure

        from flywheel.makers.conductivity.core import arrhenius

        db = campaign_db(config)
        settings = md_settings(config.conductivity)
        summary: dict[str, Any] = {}
        for mid in material_ids:
            rows = list(db.md_runs.find(db.q(material_id=mid, key=key), {"_id": 0})
                        .sort("temperature", 1))
            wanted = set(map(float, settings.temperatures))
            rows = [r for r in rows if r["temperature"] in wanted]
            if not rows:
                summary[mid] = "no runs"
                continue
            cell = Structure.from_dict(rows[0]["supercell_structure"])
            fit = arrhenius(cell, rows, settings)
            per_t = [{k: r.get(k) for k in (
                "temperature", "mean_temperature", "diffusivity", "diffusivity_std",
                "conductivity", "conductivity_std", "n_eff", "measurable",
                "diffusivity_upper", "conductivity_upper",
                "max_framework_displacement", "framework_rms", "framework_diffusivity", "framework_unstable",
                "smoothing", "production_ps")} for r in rows]
            missing = sorted(wanted - {r["temperature"] for r in rows})
            doc = {
                "campaign": db.campaign, "material_id": mid, "key": key,
                "formula": rows[0]["formula"], "specie": settings.specie,
                "potential": config.conductivity.potential,
                "n_atoms": rows[0]["n_atoms"], "settings": settings.as_dict(),
                "per_temperature": per_t, "missing_temperatures": missing, **fit,
                "time": time.time(),
            }
            db.conductivity.update_one(db.q(material_id=mid, key=key),
                                       {"$set": doc}, upsert=True)
            summary[mid] = fit["status"]
        logger.info("conductivity: %s", summary)
        return summary
