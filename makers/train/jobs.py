"""The training stage: the next MACE ensemble, trained on every oracle frame."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job

from flywheel.makers.common import campaign_db, limit_threads
from flywheel.makers.train.core import parallel_members

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig, MaceModelConfig
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.schemas import TrainOutput

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


def check_foundation(path: Path, frames: list) -> None:
    """Fail clearly if the foundation model cannot be fine-tuned on ``frames``."""
    import mace  # noqa: F401  (registers the classes torch.load unpickles)
    import torch

    try:
        model = torch.load(str(path), map_location="cpu", weights_only=False)
        known = {int(z) for z in model.atomic_numbers}
    except Exception as err:
        raise RuntimeError(
            f"filter.foundation_model {path}: not a MACE model file ({err})"
        ) from err
    needed = {int(z) for a in frames for z in a.get_atomic_numbers()}
    if missing := needed - known:
        from pymatgen.core import Element

        names = ", ".join(Element.from_Z(z).symbol for z in sorted(missing))
        raise RuntimeError(
            f"filter.foundation_model {path} does not know {names}: use a model "
            "trained on every element of chemistry.elements, or none"
        )


def train_settings(model: MaceModelConfig, device: str, n_members: int = 1):
    """MaceTrainSettings from the campaign's model section and the machine."""
    from flywheel.makers.train.core import MaceTrainSettings
    from flywheel.settings import get_settings

    threads = get_settings().NUM_THREADS
    warm_epochs = model.warm_start_epochs
    if warm_epochs is None:
        warm_epochs = max(5, model.max_num_epochs // 2)
    return MaceTrainSettings(
        num_channels=model.num_channels,
        max_L=model.max_L,
        r_max=model.r_max,
        num_interactions=model.num_interactions,
        max_num_epochs=model.max_num_epochs,
        warm_start_epochs=warm_epochs,
        batch_size=model.batch_size,
        lr=model.lr,
        device=device,
        num_threads=threads,
        parallel=parallel_members(n_members, device, threads),
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
        """Train ``filter.ensemble_size`` MACE models and store them in GridFS.

        Member ``i`` starts from member ``i`` of the previous round; in round 0 from
        ``filter.foundation_model`` when given (fine-tuning), else from scratch.
        """
        from flywheel.makers.schemas import TrainOutput
        from flywheel.makers.train.core import train_ensemble, training_report
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
            warm, start_from = None, "scratch"
            if round_index > 0 and db.find_files("models", round=round_index - 1):
                (tmp_path / "prev").mkdir()
                prev = db.fetch_models(round_index - 1, tmp_path / "prev")
                if len(prev) >= n:
                    warm, start_from = prev[:n], "previous round"
            elif config.filter.foundation_model is not None:
                foundation = Path(config.filter.foundation_model)
                check_foundation(foundation, frames)
                warm, start_from = [foundation] * n, "foundation"
            settings = train_settings(config.filter.model, device, n)
            if start_from == "foundation":  # a full schedule: max_num_epochs
                settings = replace(settings, warm_start_epochs=None)
            paths = train_ensemble(
                frames,
                tmp_path / "train",
                n_models=n,
                settings=settings,
                seeds=[1000 * round_index + i for i in range(n)],
                warm_start=warm,
            )
            report = training_report(tmp_path / "train")
            per_epoch = [m["seconds_per_epoch"] for m in report["members"]
                         if m["seconds_per_epoch"] is not None]
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
            start=start_from,
            seconds_per_epoch=sum(per_epoch) / len(per_epoch) if per_epoch else None,
            workers=len(report["workers"]),
            startup_seconds=max(w["startup_s"] for w in report["workers"]),
        )
