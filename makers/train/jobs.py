"""The training stage: the next MACE ensemble, trained on every oracle frame."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.makers.common import campaign_db, limit_threads
from jobflow import Maker, job

if TYPE_CHECKING:
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.schemas import TrainOutput

    from flywheel.config import CampaignConfig, MaceModelConfig

logger = logging.getLogger(__name__)


def gather_frames(db: CampaignDB) -> list:
    """Every oracle frame of the campaign (newest upload per candidate)."""
    import io

    from ase.io import read

    latest: dict[str, Any] = {}
    for f in db.find_files("frames"):
        latest[f["metadata"]["candidate_id"]] = f
    frames = []
    for _cid, f in sorted(latest.items()):
        text = db.get_file("frames", f["_id"]).decode()
        frames.extend(read(io.StringIO(text), index=":", format="extxyz"))
    return frames


def train_settings(model: MaceModelConfig, device: str):
    """MaceTrainSettings from the campaign's model section."""
    from flywheel.makers.train.core import MaceTrainSettings

    return MaceTrainSettings(
        num_channels=model.num_channels,
        max_L=model.max_L,
        r_max=model.r_max,
        num_interactions=model.num_interactions,
        max_num_epochs=model.max_num_epochs,
        batch_size=model.batch_size,
        lr=model.lr,
        device=device,
    )


@dataclass
class TrainMaker(Maker):
    """Train the ensemble for the next round, warm-started from the last one.

    Parameters
    ----------
    name
        Job name.
    """

    name: str = "train"

    @job
    def make(
        self, config: CampaignConfig, round_index: int, hull: Any = None
    ) -> TrainOutput:
        """Train ``filter.ensemble_size`` MACE models and store them in GridFS."""
        from flywheel.makers.filter.jobs import fetch_models
        from flywheel.makers.schemas import TrainOutput
        from flywheel.makers.train.core import train_ensemble

        from flywheel.settings import get_settings

        limit_threads()
        start = time.perf_counter()
        db = campaign_db(config)
        frames = gather_frames(db)
        if not frames:
            raise RuntimeError(
                f"round {round_index}: no oracle frames to train on "
                "(did every relaxation fail?)"
            )
        n = config.filter.ensemble_size
        device = get_settings().resolved_device()
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            warm = None
            if round_index > 0 and db.find_files("models", round=round_index - 1):
                (tmp_path / "prev").mkdir()
                prev = fetch_models(db, round_index - 1, tmp_path / "prev")
                warm = prev[:n] if len(prev) >= n else None
            paths = train_ensemble(
                frames,
                tmp_path / "train",
                n_models=n,
                settings=train_settings(config.filter.model, device),
                seeds=[1000 * round_index + i for i in range(n)],
                warm_start=warm,
            )
            # A rerun replaces this round's models instead of adding to them.
            db.delete_files("models", [f["_id"] for f in
                                       db.find_files("models", round=round_index)])
            ids = [
                str(db.put_file("models", p.name, p.read_bytes(),
                                round=round_index, member=i))
                for i, p in enumerate(paths)
            ]
        return TrainOutput(
            round=round_index,
            model_file_ids=ids,
            n_frames=len(frames),
            seconds=time.perf_counter() - start,
            warm_started=warm is not None,
        )
