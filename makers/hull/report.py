"""A campaign report people can look at: one HTML page plus PNGs, nothing from a CDN.

:func:`write_report` draws, from the campaign's collections:

* ``hit_rate.png``: per round, the hit rate of the filter's picks, the audit's base
  rate, and the enrichment (picks over audit) with its 90 % interval, per round and
  pooled;
* ``parity.png``: the filter's predicted energy per atom against the oracle's, and the
  calibration (how often the error lies within ±kσ of the ensemble, against a normal
  distribution's share);
* ``scaling.png``: the filter's error against the number of training frames it was
  trained on, log-log (the GNoME paper's scaling plot, on one campaign);
* ``hull_<system>.png`` for every ternary system with results (binaries when there
  is none), at most :data:`MAX_HULL_PLOTS`: pymatgen's
  ``PDPlotter`` of the hull of references + campaign, with new, known and reference
  phases on it marked;
* the discoveries table (formula, space group, energy above hull, decomposition
  energy, generator, parent) and the known materials the campaign found on the hull.

``flywheel run`` writes it into ``campaigns/<name>/report/``; ``flywheel report``
writes it for any campaign.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from flywheel.config import CampaignConfig
    from flywheel.db.stores import CampaignDB

logger = logging.getLogger(__name__)

REPORT_HTML = "index.html"
#: Ternary systems drawn at most (the ones with the most results first).
MAX_HULL_PLOTS = 6

_MATERIAL_FIELDS = {
    "_id": 0, "material_id": 1, "formula": 1, "chemsys": 1, "nelements": 1,
    "structure": 1, "energy_per_atom": 1, "e_above_hull": 1,
    "decomposition_energy": 1, "stable": 1, "discovery": 1, "novelty": 1,
    "known_id": 1, "generator": 1, "parent_id": 1, "round": 1, "prediction": 1,
    "selected_by": 1,
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, **kwargs: Any) -> bool:
    """Write ``fig`` to ``path`` and free it."""
    plt = _pyplot()
    if not kwargs:
        fig.tight_layout()
    fig.savefig(path, dpi=110, **kwargs)
    plt.close(fig)
    return True


def plot_hit_rate(rounds: list[dict[str, Any]], path: Path) -> bool:
    """Hit rate of the picks, audit base rate and enrichment per round."""
    rows = [r for r in rounds if r["round"] > 0]
    if not rows:
        return False
    plt = _pyplot()
    x = [r["round"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    picks = [(r.get("picks") or {}).get("hit_rate") for r in rows]
    audit = [r.get("base_rate") for r in rows]
    ax.plot(x, [np.nan if v is None else v for v in picks], "o-",
            label="filter's picks")
    ax.plot(x, [np.nan if v is None else v for v in audit], "s--",
            label="audit (uniform random picks)")
    ax.plot(x, [r.get("hit_rate") for r in rows], "^:", color="grey",
            label="all relaxed")
    ax.set(xlabel="round", ylabel="hit rate (on the hull)", title="hit rate",
           xticks=x, ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    for key, marker, label, shift in (("enrichment", "o", "this round", -0.08),
                                      ("enrichment_cumulative", "s", "pooled", 0.08)):
        for r in rows:
            e = r.get(key) or {}
            lo, hi, value = e.get("lo"), e.get("hi"), e.get("value")
            if lo is None or hi is None:
                continue
            xr = r["round"] + shift
            bx.plot([xr, xr], [lo, hi], "-", color="C0" if shift < 0 else "C1")
            if value:
                bx.plot(xr, value, marker, color="C0" if shift < 0 else "C1")
        bx.plot([], [], marker + "-", color="C0" if shift < 0 else "C1",
                label=f"{label} (90 % interval)")
    bx.axhline(1.0, color="k", lw=0.8, ls="--")
    bx.set(xlabel="round", ylabel="enrichment (picks / audit)", yscale="log",
           title="filter vs random", xticks=x)
    bx.legend(fontsize=8)
    return _save(fig, path)


def plot_parity(materials: list[dict[str, Any]], path: Path) -> bool:
    """Predicted vs oracle energy per atom, and the ensemble's calibration."""
    from statistics import NormalDist

    scored = [m for m in materials if m.get("prediction")]
    if not scored:
        return False
    plt = _pyplot()
    true = np.array([m["energy_per_atom"] for m in scored])
    pred = np.array([m["prediction"]["energy_per_atom"] for m in scored])
    std = np.array([max(m["prediction"].get("energy_std", 0.0), 1e-6) for m in scored])
    rounds = np.array([m["round"] for m in scored])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4.2))
    for r in sorted(set(rounds.tolist())):
        sel = rounds == r
        ax.errorbar(true[sel], pred[sel], yerr=std[sel], fmt="o", ms=4, alpha=0.7,
                    label=f"round {r}")
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    mae = float(np.mean(np.abs(pred - true)))
    ax.set(xlabel="oracle energy (eV/atom)", ylabel="filter prediction (eV/atom)",
           title=f"parity: MAE {1000 * mae:.0f} meV/atom, n = {len(scored)}")
    ax.legend(fontsize=8)
    k = np.linspace(0.25, 3.0, 12)
    z = np.abs(pred - true) / std
    bx.plot(k, [float(np.mean(z <= kk)) for kk in k], "o-", label="observed")
    bx.plot(k, [2 * NormalDist().cdf(kk) - 1 for kk in k], "k--",
            label="a calibrated Gaussian")
    bx.set(xlabel="k (error within ±kσ of the ensemble)", ylabel="fraction of results",
           title="calibration", ylim=(0, 1.02))
    bx.legend(fontsize=8)
    return _save(fig, path)


def plot_scaling(rounds: list[dict[str, Any]], path: Path) -> bool:
    """Filter error against the number of frames its ensemble was trained on."""
    by_round = {r["round"]: r for r in rounds}
    points = [(by_round[r["round"] - 1].get("n_frames"), r.get("filter_mae"),
               r["round"])
              for r in rounds if r["round"] > 0 and r["round"] - 1 in by_round]
    points = [(n, e, r) for n, e, r in points if n and e]
    if not points:
        return False
    plt = _pyplot()
    n, e, labels = np.array(points, dtype=float).T
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(n, 1000 * e, "o-")
    for ni, ei, r in zip(n, e, labels.astype(int), strict=True):
        ax.annotate(f"r{r}", (ni, 1000 * ei), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.set(xlabel="training frames", ylabel="filter MAE on the round's results "
           "(meV/atom)", title="error vs training data")
    return _save(fig, path)


def plot_hull(
    system: str, entries: list[tuple[str, str, float]], kinds: dict[str, str],
    path: Path,
) -> bool:
    """pymatgen's PDPlotter of one binary or ternary system, with the stable phases
    marked by kind (``new``, ``known``, ``reference``, ``other``)."""
    from pymatgen.analysis.phase_diagram import (
        PDEntry,
        PDPlotter,
        PhaseDiagram,
        triangular_coord,
    )
    from pymatgen.core import Composition

    els = set(system.split("-"))
    pd_entries = []
    for entry_id, formula, energy in entries:
        comp = Composition(formula)
        if {e.symbol for e in comp.elements} <= els:
            pd_entries.append(PDEntry(comp, energy * comp.num_atoms,
                                      attribute=entry_id))
    try:
        pd = PhaseDiagram(pd_entries)
    except ValueError as exc:  # an element without a unary entry
        logger.warning("no hull plot for %s: %s", system, exc)
        return False
    _pyplot()  # the Agg backend before PDPlotter imports pyplot
    ax = PDPlotter(pd, show_unstable=0, backend="matplotlib").get_plot(
        label_unstable=False)
    style = {"new": ("*", "red", 260, "new (discovery)"),
             "known": ("o", "royalblue", 110, "known, found by the campaign"),
             "reference": ("s", "grey", 70, "reference (known material)"),
             "other": ("D", "orange", 70, "seed / other")}
    seen = set()
    for entry in pd.stable_entries:
        eid = entry.attribute
        kind = kinds.get(eid, "reference" if eid.startswith("ref:") else "other")
        coords = pd.pd_coords(entry.composition)
        if pd.dim == 3:
            x, y = triangular_coord(coords)
        else:  # binary: composition fraction, formation energy (PDPlotter's axes)
            x, y = float(coords[0]), pd.get_form_energy_per_atom(entry)
        marker, color, size, label = style[kind]
        ax.scatter([x], [y], marker=marker, s=size, color=color, zorder=10,
                   edgecolors="k", label=None if kind in seen else label)
        seen.add(kind)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{system}: hull of references + campaign")
    fig = ax.get_figure()
    fig.set_size_inches(10, 8.5)
    return _save(fig, path, bbox_inches="tight")


def _kind(m: dict[str, Any]) -> str:
    if m.get("discovery"):
        return "new"
    if m.get("novelty") == "known" and m.get("generator") != "reference":
        return "known"
    if m.get("generator") == "reference":
        return "reference"
    return "other"


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>"
                         for k, _ in columns) + "</tr>"
        for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _spacegroup(structure: dict[str, Any]) -> str | None:
    """``"F-43m (216)"``, as the GNoME export gives it; None if undetermined."""
    from pymatgen.core import Structure

    from flywheel.makers.hull.export import symmetry

    sym = symmetry(Structure.from_dict(structure))
    if sym["Space Group"] is None:
        return None
    return f"{sym['Space Group']} ({sym['Space Group Number']})"


def write_report(
    db: CampaignDB, config: CampaignConfig, directory: Path | str,
) -> Path:
    """Write ``index.html`` and its PNGs into ``directory``; return the page's path."""
    from flywheel.db.uri import redact_uri
    from flywheel.makers.hull.core import hull_entries

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rounds = list(db.rounds.find(db.q(), {"_id": 0}).sort("round", 1))
    materials = list(db.materials.find(db.q(), _MATERIAL_FIELDS))
    figures: list[tuple[str, str]] = []

    def draw(name: str, caption: str, plot: Any, *args: Any) -> None:
        """One figure; a figure that fails is logged and left out, never the page."""
        try:
            if plot(*args, directory / name):
                figures.append((name, caption))
        except Exception as exc:
            logger.warning("report of %s: %s not drawn: %s", db.campaign, name, exc)

    draw("hit_rate.png", "Hit rate of the filter's picks against the audit's "
         "uniformly random picks; enrichment, 90 % interval", plot_hit_rate, rounds)
    draw("parity.png", "Filter prediction against the oracle, and the ensemble's "
         "calibration", plot_parity, materials)
    draw("scaling.png", "Filter error against training-set size", plot_scaling,
         rounds)
    entries = hull_entries(db, config)
    kinds = {m["material_id"]: _kind(m) for m in materials}
    # the ternary systems with results; a campaign without any: its binaries
    order = 3 if any(m.get("nelements") == 3 for m in materials) else 2
    counts: dict[str, int] = {}
    for m in materials:
        if m.get("nelements") == order:
            counts[m["chemsys"]] = counts.get(m["chemsys"], 0) + 1
    for system in sorted(counts, key=lambda s: (-counts[s], s))[:MAX_HULL_PLOTS]:
        draw(f"hull_{system}.png", f"{system}: new, known and reference phases on "
             "the hull", plot_hull, system, entries, kinds)
    stable = sorted((m for m in materials if m.get("stable")),
                    key=lambda m: (m["chemsys"], m["formula"]))
    discoveries = [dict(m, spacegroup=_spacegroup(m["structure"]))
                   for m in stable if m.get("discovery")]
    known = [m for m in stable if _kind(m) == "known"]
    last = rounds[-1] if rounds else {}
    cum = last.get("enrichment_cumulative") or {}
    summary = [
        ("rounds", len(rounds)),
        ("oracle results", len(materials)),
        ("entries on the hull", len(stable)),
        ("discoveries (new, on the hull)", len(discoveries)),
        ("known materials found on the hull", len(known)),
        ("recomputed references on the hull",
         sum(_kind(m) == "reference" for m in stable)),
        ("pooled enrichment [90 % interval]",
         f"{_fmt(cum.get('value'))} [{_fmt(cum.get('lo'))}–{_fmt(cum.get('hi'))}]"),
    ]
    disc_cols = [("formula", "formula"), ("material_id", "id"),
                 ("spacegroup", "space group"), ("e_above_hull", "E above hull"),
                 ("decomposition_energy", "decomposition energy (eV/atom)"),
                 ("generator", "generator"), ("parent_id", "parent"),
                 ("round", "round")]
    known_cols = [("formula", "formula"), ("material_id", "id"),
                  ("known_id", "matches"), ("generator", "generator"),
                  ("round", "round")]
    title = f"flywheel campaign {config.name}"
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "th{background:#eee}img{max-width:100%;border:1px solid #ddd}"
        "figure{margin:1.5em 0}</style>",
        "</head><body>",
        f"<h1 id='campaign'>{html.escape(title)}</h1>",
        f"<p>Elements {html.escape(', '.join(config.chemistry.elements))}; oracle "
        f"{html.escape(config.oracle.backend)}; database "
        f"{html.escape(redact_uri(config.database.uri))}.</p>",
        _table([{k: v for k, v in summary}], [(k, k) for k, _ in summary]),
        "<h2>Discoveries</h2>",
        _table(discoveries, disc_cols) if discoveries
        else "<p>No discoveries: no new structure lies below the hull of the known "
             "materials and the campaign's other results.</p>",
        "<h2>Known materials found on the hull</h2>",
        _table(known, known_cols) if known else "<p>None.</p>",
        "<h2>Plots</h2>",
    ]
    for name, caption in figures:
        parts.append(f"<figure><img src='{name}' alt='{html.escape(caption)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    # The page checks its own images once loaded (tests read it back from a headless
    # browser): data-images, data-broken on <body>. Inline, no network.
    parts += ["<script>window.addEventListener('load', () => {"
              "const imgs = Array.from(document.images);"
              "document.body.dataset.images = imgs.length;"
              "document.body.dataset.broken = imgs.filter("
              "i => !i.complete || i.naturalWidth === 0).length;});</script>",
              "</body></html>"]
    page = directory / REPORT_HTML
    page.write_text("\n".join(parts), encoding="utf-8")
    logger.info("report of %s: %s (%d plots)", db.campaign, page, len(figures))
    return page
