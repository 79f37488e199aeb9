"""The campaign's interatomic potential as a product: held-out split, errors, card.

Pure functions (the CLI and the database side are in
:mod:`flywheel.makers.potential.export`). Errors are measured only on frames of
materials the model never trained on: the split is by material (every relaxation
frame of a material on one side), because frames of one relaxation are nearly
identical and a frame-level split would report interpolation as generalisation.

Units: energies eV (errors meV/atom), forces eV/Å (errors meV/Å), stresses eV/Å³
(errors meV/Å³), ASE sign convention.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.makers.train.core import ENERGY_KEY, FORCES_KEY, STRESS_KEY


def split_materials(ids: Sequence[str], test_fraction: float, seed: int = 0,
                    same: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Deterministic train/test split of material ids (at least one test id when
    there are two or more groups). Each id's side is fixed by a hash of ``seed`` and
    its group, so the order of ``ids`` does not matter. ``same`` maps an id to
    another whose side it must share (a duplicate structure and its original)."""
    same = same or {}

    def group(m: str) -> str:
        seen = set()
        while m in same and m not in seen:
            seen.add(m)
            m = same[m]
        return m

    uniq = sorted(set(ids))
    groups = sorted({group(m) for m in uniq})
    if len(groups) < 2:
        raise ValueError(
            f"need at least 2 distinct materials to hold one out, got {len(groups)}")
    ranked = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode())
                    .hexdigest())
    n_test = min(len(groups) - 1, max(1, round(test_fraction * len(groups))))
    held = set(ranked[:n_test])
    test = [m for m in uniq if group(m) in held]
    return [m for m in uniq if group(m) not in held], test


def model_info(path: Path) -> dict[str, Any]:
    """Elements, cutoff, size and architecture of a saved MACE model."""
    import mace  # noqa: F401  (registers the classes torch.load unpickles)
    import torch
    from pymatgen.core import Element

    model = torch.load(str(path), map_location="cpu", weights_only=False)
    zs = [int(z) for z in model.atomic_numbers]
    return {
        "elements": [Element.from_Z(z).symbol for z in zs],
        "r_max": float(model.r_max),
        "num_interactions": int(model.num_interactions),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "class": type(model).__name__,
    }


def evaluate(model_paths: Sequence[Path], frames: Sequence[Any],
             device: str = "cpu") -> dict[str, Any]:
    """Errors of a model (or the mean of an ensemble, as MACECalculator computes it)
    on labelled frames (``REF_energy``, optional ``REF_forces``, ``REF_stress``).

    Returns MAE and RMSE of the energy per atom (meV/atom), of the force components
    (meV/Å) and of the stress components (meV/Å³), with the counts they are over.
    """
    from mace.calculators import MACECalculator

    if not frames:
        return {"n_frames": 0}
    calc = MACECalculator(model_paths=[str(p) for p in model_paths], device=device,
                          default_dtype="float64")
    de, df, ds = [], [], []
    for atoms in frames:
        a = atoms.copy()
        a.calc = calc
        n = len(a)
        de.append((a.get_potential_energy() - atoms.info[ENERGY_KEY]) / n)
        if FORCES_KEY in atoms.arrays:
            df.append((a.get_forces() - atoms.arrays[FORCES_KEY]).ravel())
        if atoms.info.get(STRESS_KEY) is not None:
            ref = np.asarray(atoms.info[STRESS_KEY], dtype=float).ravel()
            pred = a.get_stress(voigt=len(ref) == 6).ravel()
            ds.append(pred - ref)
    out: dict[str, Any] = {"n_frames": len(frames)}
    for name, parts, scale in (("energy_per_atom", [np.asarray(de)], 1000.0),
                               ("forces", df, 1000.0), ("stress", ds, 1000.0)):
        if parts:
            x = np.concatenate([np.atleast_1d(p) for p in parts]) * scale
            out[f"{name}_mae"] = float(np.mean(np.abs(x)))
            out[f"{name}_rmse"] = float(np.sqrt(np.mean(x**2)))
            out[f"{name}_n"] = int(x.size)
    return out


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as Markdown (the same content as ``model_card.json``)."""
    e = card.get("held_out") or {}
    lines = [
        f"# {card['campaign']} potential ({card['kind']})",
        "",
        f"- files: {', '.join(card['files'])}",
        f"- trained on the oracle **{card['oracle']}**: {card['train_frames']} frames "
        f"of {card['train_materials']} materials (relaxation trajectories)",
        f"- elements: {' '.join(card['model']['elements'])}",
        f"- architecture: {card['model']['class']}, r_max {card['model']['r_max']} Å, "
        f"{card['model']['num_interactions']} interactions, "
        f"{card['model']['parameters']:,} parameters"
        + (f", {card['members']} ensemble members (MACECalculator averages them)"
           if card.get("members", 1) > 1 else ""),
        f"- flywheel {card['flywheel_version']}, written {card['written']}",
        "",
        "## Held-out errors",
        "",
    ]
    if e.get("n_frames"):
        lines += [
            f"{card['held_out_how']}: {e['n_frames']} frames of "
            f"{card['held_out_materials']} materials.",
            "",
            "| quantity | MAE | RMSE | n |",
            "|---|---|---|---|",
        ]
        for key, unit in (("energy_per_atom", "meV/atom"), ("forces", "meV/Å"),
                          ("stress", "meV/Å³")):
            if f"{key}_mae" in e:
                lines.append(f"| {key.replace('_', ' ')} ({unit}) | "
                             f"{e[f'{key}_mae']:.1f} | {e[f'{key}_rmse']:.1f} | "
                             f"{e[f'{key}_n']} |")
    else:
        lines.append(f"None: {card['held_out_how']}.")
    lines += ["", "## Learning curve (each round's ensemble on the next round's "
              "materials, which it had not seen)", "",
              "| model of round | training frames | next-round frames | "
              "energy MAE (meV/atom) | force MAE (meV/Å) |", "|---|---|---|---|---|"]
    for row in card["learning_curve"]:
        f_mae = row.get("forces_mae")
        lines.append(f"| {row['round']} | {row['train_frames']} | {row['n_frames']} | "
                     f"{row.get('energy_per_atom_mae', float('nan')):.1f} | "
                     + (f"{f_mae:.1f}" if f_mae is not None else "-") + " |")
    lines += ["", "## Use", "", "```python",
              "from mace.calculators import MACECalculator",
              f"calc = MACECalculator(model_paths={card['files']!r}, device='cpu')",
              "# atomate2: ForceFieldRelaxMaker(force_field_name='MACE', "
              "calculator_kwargs={'model': PATH})",
              "```", "", "## Limits", "",
              "Trained only on this campaign's chemistry and on structures near "
              "relaxation paths; no MD, defects or surfaces. Errors above are for "
              "such structures. The energy scale is the oracle's "
              f"({card['oracle']}), without MP2020 corrections.", ""]
    return "\n".join(lines)
