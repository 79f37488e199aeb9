"""``flywheel conductivity``, ``flywheel screen`` and ``flywheel potential``: what a
campaign's results and data are used for after the search (docs/conductivity.md,
docs/screens.md, docs/potential.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _selection_args(p: argparse.ArgumentParser, default: str) -> None:
    sel = p.add_argument_group(f"which materials (default: {default})")
    sel.add_argument("--ids", nargs="+", metavar="ID",
                     help="these campaign results or references (e.g. mp-1960)")
    sel.add_argument("--discoveries", action="store_true", help="the discoveries")
    sel.add_argument("--stable", action="store_true", help="every entry on the hull")
    sel.add_argument("--chemsys", help="phase diagram, e.g. Li-Fe-O (with subsystems)")
    sel.add_argument("--formula", help="reduced formula, e.g. LiFeO2")
    sel.add_argument("--max-ehull", type=float, help="energy above hull ≤ (eV/atom)")


def _selection(args: argparse.Namespace) -> dict[str, Any] | None:
    """A ``materials`` filter from the selection flags (None: the command's default)."""
    from flywheel.db.queries import material_filter

    if not (args.discoveries or args.stable or args.chemsys or args.formula
            or args.max_ehull is not None):
        return None
    return material_filter(stable=True if args.stable else None,
                           discoveries=args.discoveries, chemsys=args.chemsys,
                           formula=args.formula, max_ehull=args.max_ehull)


def _campaign(path: str, uri: str | None):
    from flywheel.config import load_campaign
    from flywheel.db.uri import resolve_uri

    config = load_campaign(path)
    config.database.uri = resolve_uri(uri, config.database.uri)
    return config


def conductivity_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel conductivity``: MD ionic-conductivity screen of a campaign's
    materials (NVT MD at several temperatures, DiffusionAnalyzer, Arrhenius fit)."""
    p = argparse.ArgumentParser(prog="flywheel conductivity",
                                description=conductivity_main.__doc__)
    p.add_argument("campaign", help="campaign YAML")
    _selection_args(p, "the discoveries")
    md = p.add_argument_group("MD settings (override the campaign's conductivity:)")
    md.add_argument("--potential", help="'chgnet' or a MACE model file")
    md.add_argument("--temperatures", nargs="+", type=float, metavar="K")
    md.add_argument("--production-ps", type=float)
    md.add_argument("--equilibration-ps", type=float)
    md.add_argument("--min-length", type=float, help="supercell width ≥ (Å)")
    md.add_argument("--max-materials", type=int)
    p.add_argument("--dir", help="campaign directory (default: campaigns/<name>)")
    p.add_argument("--uri", help="override database.uri")
    p.add_argument("--submit-only", action="store_true",
                   help="add the screen to the LaunchPad and return (qlaunch runs it)")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    config = _campaign(args.campaign, args.uri)
    from flywheel.config import ConductivityConfig, ConfigError

    if args.potential and args.potential.lower() != "chgnet":
        args.potential = str(Path(args.potential).resolve())  # workers run elsewhere
    overrides = {k: v for k, v in {
        "potential": args.potential, "temperatures": args.temperatures,
        "production_ps": args.production_ps, "equilibration_ps": args.equilibration_ps,
        "min_length": args.min_length, "max_materials": args.max_materials,
    }.items() if v is not None}
    if overrides:
        try:
            config.conductivity = ConductivityConfig(
                **{**config.conductivity.model_dump(), **overrides})
        except ValueError as err:
            raise ConfigError(f"flywheel conductivity: {err}") from None
    from flywheel.makers.conductivity.jobs import settings_key

    try:
        key = settings_key(config.conductivity)  # fails early on a missing model file
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    submit_args = {"material_ids": args.ids, "selection": _selection(args)}
    from flywheel.launchers.local import run_local, submit_conductivity

    if args.submit_only:
        fw_id = submit_conductivity(config, **submit_args)
        print(f"conductivity screen of {config.name} submitted (firework {fw_id})")
        return 0
    directory = Path(args.dir or Path("campaigns") / config.name).resolve()
    summary = run_local(config, directory, progress=not args.no_progress,
                        timeout=args.timeout, workflow="conductivity",
                        submit_args=submit_args)
    from flywheel.db.stores import CampaignDB

    db = CampaignDB(config.database.uri, config.name)
    if failed := summary["states"].get("FIZZLED", 0):
        print(f"warning: {failed} MD job(s) failed; see {directory / 'worker_gpu.log'} "
              f"and `lpad -l {directory / 'my_launchpad.yaml'} get_fws -s FIZZLED "
              "-d more`", file=sys.stderr)
    rows = list(db.conductivity.find(db.q(key=key), {"_id": 0}))
    if not rows:
        print("no conductivity result: nothing selected contains "
              f"{config.conductivity.specie} with a host framework, or every MD job "
              "failed")
        return 1 if failed else 0
    print(conductivity_table(rows))
    print(f"all results: flywheel query {args.campaign} --conductivity")
    return 0


def conductivity_table(rows: list[dict[str, Any]]) -> str:
    """One line per material: status, Ea, σ(300 K) with its 1-σ range, per T."""
    lines = [f"{'id':<16} {'formula':<14} {'atoms':>5} {'status':<15} "
             f"{'Ea eV':>12} {'sigma300K mS/cm':>16}  {'1-sigma range':<17} per T"]
    for r in rows:
        ea = (f"{r['activation_energy']:.3f}±{r['activation_energy_std'] or 0:.3f}"
              if r.get("activation_energy") is not None else "-")
        s = (f"{r['conductivity_target']:.3g}" if r.get("conductivity_target")
             is not None else "-")
        rng = ("{:.2g}-{:.2g}".format(*r["conductivity_target_range"])
               if r.get("conductivity_target_range") else "-")
        per_t = ", ".join(
            f"{t['temperature']:.0f}K " + (f"{t['conductivity']:.3g}" if t["measurable"]
                                           else f"<{t['conductivity_upper']:.2g}")
            for t in r["per_temperature"])
        lines.append(f"{r['material_id']:<16} {r['formula']:<14} {r['n_atoms']:>5} "
                     f"{r['status']:<15} {ea:>12} {s:>16}  {rng:<17} {per_t}")
    return "\n".join(lines)


def screen_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel screen layered|li-conductor``: screen a campaign's materials and
    store each verdict on the material (query with --layered / --li-conductor)."""
    from flywheel.makers.screen.jobs import SCREENS

    p = argparse.ArgumentParser(prog="flywheel screen", description=screen_main.__doc__)
    p.add_argument("screen", choices=SCREENS)
    p.add_argument("campaign", help="campaign YAML")
    _selection_args(p, "the discoveries")
    p.add_argument("--uri", help="override database.uri")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    config = _campaign(args.campaign, args.uri)
    from flywheel.db.errors import check_reachable
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.screen.jobs import run_screen

    check_reachable(config.database.uri)
    selection = _selection(args)
    if args.ids:
        selection = {"material_id": {"$in": args.ids}}
    db = CampaignDB(config.database.uri, config.name)
    summary = run_screen(db, config, args.screen, selection,
                         progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    what = "the discoveries" if selection is None else "the selected materials"
    flag = "--layered" if args.screen == "layered" else "--li-conductor"
    print(f"screen {args.screen}: {summary['passed']} of {summary['screened']} of "
          f"{what} pass ({summary['seconds']:.1f} s); list them with: flywheel query "
          f"{args.campaign} {flag}")
    return 0


def potential_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel potential export``: the campaign's MACE potential with a model card
    (held-out errors, learning curve, elements)."""
    p = argparse.ArgumentParser(prog="flywheel potential",
                                description=potential_main.__doc__)
    p.add_argument("action", choices=["export"])
    p.add_argument("campaign", help="campaign YAML")
    p.add_argument("-o", "--output", required=True, help="folder for models and card")
    p.add_argument("--train", action="store_true",
                   help="train one final model (potential: section) on the campaign's "
                   "frames with a held-out split of materials, instead of exporting "
                   "the filter's ensemble")
    p.add_argument("--round", type=int,
                   help="filter ensemble of this round (default: the one the last "
                   "round's filter used)")
    p.add_argument("--uri", help="override database.uri")
    args = p.parse_args(argv)
    config = _campaign(args.campaign, args.uri)
    from flywheel.db.errors import check_reachable
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.potential.export import export_filter, train_final
    from flywheel.settings import get_settings

    check_reachable(config.database.uri)
    db = CampaignDB(config.database.uri, config.name)
    device = get_settings().resolved_device()
    out = Path(args.output)
    if args.train:
        card = train_final(db, config, out, device)
    else:
        card = export_filter(db, config, out, args.round, device)
    print(card.read_text())
    print(f"wrote {out.resolve()} (model card: {card.name}, model_card.json)")
    return 0
