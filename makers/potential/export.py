"""``flywheel potential export``: the campaign's MACE potential with a model card.

Two kinds (docs/potential.md):

* ``filter`` (default): the ensemble the filter used in the last round, i.e. the
  models trained at the end of the round before it. Its stored predictions are
  exactly what ``MACECalculator`` gives with these files, and the last round's oracle
  frames are data it never trained on: the card's held-out errors.
* ``final`` (``--train``): one larger model (``potential:`` section) trained on the
  campaign's frames with ``potential.test_fraction`` of the materials held out (all
  their frames), fine-tuned from ``filter.foundation_model`` when given; the card's
  errors are on the held-out materials.

Both cards carry the round-by-round learning curve: the ensemble of round ``r`` on
the frames of the materials first relaxed in round ``r + 1``.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.makers.potential.core import (
    card_markdown,
    evaluate,
    model_info,
    split_materials,
)

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB

logger = logging.getLogger(__name__)


def frames_by_material(db: CampaignDB) -> dict[str, tuple[int, list]]:
    """``{candidate id: (round, frames)}`` of every oracle frame file (newest upload
    per candidate, as training uses)."""
    from ase.io import read

    latest: dict[str, Any] = {}
    for f in db.find_files("frames"):
        latest[f["metadata"]["candidate_id"]] = f
    out = {}
    for cid, f in sorted(latest.items()):
        text = db.get_file("frames", f["_id"]).decode()
        out[cid] = (int(f["metadata"].get("round", 0)),
                    read(io.StringIO(text), index=":", format="extxyz"))
    return out


def model_rounds(db: CampaignDB) -> list[int]:
    """Rounds with a stored ensemble, ascending."""
    return sorted({f["metadata"]["round"] for f in db.find_files("models")})


def learning_curve(db: CampaignDB, frames: dict[str, tuple[int, list]],
                   device: str = "cpu") -> list[dict[str, Any]]:
    """Each stored ensemble on the next round's frames (never trained on)."""
    curve = []
    for r in model_rounds(db):
        nxt = [a for rnd, fr in frames.values() if rnd == r + 1 for a in fr]
        if not nxt:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            paths = db.fetch_models(r, Path(tmp))
            row = evaluate(paths, nxt, device)
        row.update(round=r, train_frames=sum(len(fr) for rnd, fr in frames.values()
                                             if rnd <= r))
        curve.append(row)
        logger.info("learning curve: round %d model, %d unseen frames, E MAE %.1f "
                    "meV/atom", r, row["n_frames"], row.get("energy_per_atom_mae", -1))
    return curve


def _card(config: CampaignConfig, kind: str, files: list[str], info: dict[str, Any],
          train: list[str], frames: dict[str, tuple[int, list]], held: list[str],
          held_out: dict[str, Any], how: str, curve: list[dict[str, Any]],
          **extra: Any) -> dict[str, Any]:
    from flywheel import __version__

    return {
        "campaign": config.name, "kind": kind, "files": files, "model": info,
        "oracle": config.oracle.backend,
        "train_materials": len(train),
        "train_frames": sum(len(frames[m][1]) for m in train),
        "held_out_materials": len(held), "held_out_material_ids": held,
        "held_out": held_out, "held_out_how": how, "learning_curve": curve,
        "flywheel_version": __version__,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        **extra,
    }


def _write(out: Path, card: dict[str, Any]) -> Path:
    (out / "model_card.json").write_text(json.dumps(card, indent=1, default=str))
    (out / "model_card.md").write_text(card_markdown(card))
    return out / "model_card.md"


def export_filter(db: CampaignDB, config: CampaignConfig, out: Path,
                  round_index: int | None = None, device: str = "cpu") -> Path:
    """Write the ensemble of ``round_index`` (default: the one the last round's filter
    used) and its card to ``out``; return the card's path."""
    rounds = model_rounds(db)
    if not rounds:
        raise RuntimeError(f"campaign {config.name!r} has no stored models yet")
    frames = frames_by_material(db)
    last = max((rnd for rnd, _ in frames.values()), default=0)
    if round_index is None:
        usable = [r for r in rounds if r < last]
        round_index = usable[-1] if usable else rounds[-1]
    if round_index not in rounds:
        raise RuntimeError(f"no models stored for round {round_index}; rounds with "
                           f"models: {rounds}")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("member*.model"):  # an earlier export into this folder
        old.unlink()
    paths = db.fetch_models(round_index, out)
    files = [p.name for p in paths]
    train = [m for m, (rnd, _) in frames.items() if rnd <= round_index]
    held = [m for m, (rnd, _) in frames.items() if rnd > round_index]
    held_frames = [a for m in held for a in frames[m][1]]
    held_out = evaluate(paths, held_frames, device) if held_frames else {}
    how = (f"the frames of the materials relaxed after round {round_index}, which "
           "this ensemble never trained on" if held else
           f"this ensemble (round {round_index}) trained on every frame of the "
           "campaign; export an earlier round, or use --train for a held-out split")
    card = _card(config, "filter ensemble", files, model_info(paths[0]), train, frames,
                 held, held_out, how, learning_curve(db, frames, device),
                 members=len(paths), round=round_index)
    return _write(out, card)


def train_final(db: CampaignDB, config: CampaignConfig, out: Path,
                device: str = "cpu") -> Path:
    """Train the ``potential:`` model on the campaign's frames minus a held-out split
    of materials, measure it on them, write model and card; return the card's path."""
    from flywheel.makers.train.core import MaceTrainSettings, train_ensemble
    from flywheel.makers.train.jobs import check_foundation, parallel_members
    from flywheel.settings import get_settings

    pc = config.potential
    frames = frames_by_material(db)
    # A duplicate (the same relaxed structure as an earlier material) stays on its
    # original's side of the split.
    same = {d["material_id"]: d["known_id"] for d in db.materials.find(
        db.q(novelty="duplicate"), {"material_id": 1, "known_id": 1})
        if d.get("known_id")}
    try:
        train, held = split_materials(list(frames), pc.test_fraction, pc.seed, same)
    except ValueError as err:
        raise RuntimeError(f"campaign {config.name!r}: {err}") from None
    # The model cannot predict an element it never saw: such materials train.
    seen = {int(z) for m in train for a in frames[m][1] for z in a.numbers}
    moved = [m for m in held if {int(z) for a in frames[m][1] for z in a.numbers}
             - seen]
    if moved:
        logger.warning("%d held-out materials have elements no training material has;"
                       " they are trained on instead", len(moved))
        train, held = sorted({*train, *moved}), [m for m in held if m not in moved]
    train_frames = [a for m in train for a in frames[m][1]]
    held_frames = [a for m in held for a in frames[m][1]]
    warm = None
    if config.filter.foundation_model is not None:
        check_foundation(Path(config.filter.foundation_model), train_frames)
        warm = [Path(config.filter.foundation_model)]
    threads = get_settings().NUM_THREADS
    settings = MaceTrainSettings(
        num_channels=pc.num_channels, max_L=pc.max_L, r_max=pc.r_max,
        num_interactions=pc.num_interactions, max_num_epochs=pc.max_num_epochs,
        warm_start_epochs=None, batch_size=pc.batch_size, lr=pc.lr, device=device,
        num_threads=threads, parallel=parallel_members(1, device, threads),
    )
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("training the final potential on %d frames of %d materials "
                    "(%d materials held out)", len(train_frames), len(train), len(held))
        (path,) = train_ensemble(train_frames, Path(tmp), n_models=1, settings=settings,
                                 seeds=[pc.seed], warm_start=warm)
        final = out / "potential.model"
        shutil.copyfile(path, final)
        log = next(Path(tmp).glob("member_0/*_train.log"), None)
        if log is not None:
            shutil.copyfile(log, out / "training.log")
    held_out = evaluate([final], held_frames, device)
    how = (f"{len(held)} of {len(frames)} materials (potential.test_fraction "
           f"{pc.test_fraction}, seed {pc.seed}; every frame of a material on one "
           "side) held out of training")
    card = _card(config, "final", [final.name], model_info(final), train, frames, held,
                 held_out, how, learning_curve(db, frames, device),
                 settings=pc.model_dump(),
                 foundation=str(config.filter.foundation_model or "") or None)
    return _write(out, card)
