"""Round metrics from the round's oracle results (pure functions)."""

from __future__ import annotations

from typing import Any


def round_metrics(materials: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Hit rate and filter quality for the materials evaluated in one round.

    Parameters
    ----------
    materials
        Material documents of the round (after the hull update): ``stable``,
        ``energy_per_atom`` and, when the filter scored them, ``prediction`` with
        ``energy_per_atom`` and ``e_above_hull``.
    threshold
        Predicted energy above hull (eV/atom) at or below which the filter called a
        candidate stable.

    Returns
    -------
    dict
        ``evaluated``, ``stable_found``, ``hit_rate`` (stable ÷ evaluated),
        ``filter_mae`` (eV/atom), ``precision`` and ``recall`` of the filter's stable
        calls against the oracle's hull (None where undefined).
    """
    evaluated = len(materials)
    stable = [bool(m.get("stable")) for m in materials]
    out: dict[str, Any] = {
        "evaluated": evaluated,
        "stable_found": sum(stable),
        "hit_rate": (sum(stable) / evaluated) if evaluated else None,
        "filter_mae": None,
        "precision": None,
        "recall": None,
    }
    scored = [(m, s) for m, s in zip(materials, stable) if m.get("prediction")]
    if not scored:
        return out
    errors = [
        abs(m["prediction"]["energy_per_atom"] - m["energy_per_atom"]) for m, _ in scored
    ]
    out["filter_mae"] = sum(errors) / len(errors)
    calls = [m["prediction"]["e_above_hull"] <= threshold for m, _ in scored]
    truth = [s for _, s in scored]
    tp = sum(c and t for c, t in zip(calls, truth))
    if sum(calls):
        out["precision"] = tp / sum(calls)
    if sum(truth):
        out["recall"] = tp / sum(truth)
    return out
