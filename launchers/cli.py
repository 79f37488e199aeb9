"""The ``flywheel`` command line: ``init``, ``run``, ``submit``, ``export``, ``status``,
``query`` and ``db``. Each command calls the same functions a Python user would.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from flywheel import __version__
from flywheel.settings import DEFAULT_URI

USAGE = """flywheel <command> [options]

commands:
  init     write an example campaign and the FireWorks/jobflow files
  run      run a campaign locally (local database server + cpu and gpu workers)
  submit   add a campaign to the configured LaunchPad (for qlaunch on a cluster)
  export   write the campaign workflow for stock `lpad add`, or (--format) the
           results as files: GNoME release layout, CIF, extended XYZ, JSON entries
  report   write the campaign report (HTML page + plots)
  status   rounds and fireworks per round, category and state (incl. lost)
  recover  rerun lost fireworks (killed workers) and, with --fizzled, fizzled ones
  recheck  re-check discoveries at r2SCAN fidelity (VASP r2SCAN or CHGNet-r2SCAN)
  query    materials from the campaign database
  conductivity  MD ionic-conductivity screen (NVT MD, DiffusionAnalyzer, Arrhenius)
  screen   layered | li-conductor screens of the discoveries
  potential  export the campaign's MACE potential with a model card
  db       start | stop | status the local database server
"""


def _load(path: str):
    """Load a campaign and read its seed files, so that an unreadable seed file is
    one clear error before anything is submitted.
    """
    from flywheel.config import ConfigError, load_campaign
    from flywheel.makers.seeds.core import load_seed_file

    config = load_campaign(path)
    for seed_file in config.seeds.files:
        if seed_file.is_dir():  # a folder or GNoME layout: some structure must load
            from flywheel.makers.seeds.sources import load_structures

            report = load_structures(seed_file)
            if not report:
                raise ConfigError(f"{path}: field 'seeds.files': no structure could be "
                                  f"read from {seed_file}: {report.summary()}")
            continue
        try:
            load_seed_file(seed_file)
        except (ValueError, OSError) as err:
            raise ConfigError(f"{path}: field 'seeds.files': {err}") from None
    from flywheel.makers.seeds.references import missing_elemental_references

    if missing := missing_elemental_references(config):
        raise ConfigError(
            f"{path}: no elemental reference for {', '.join(missing)}: the first "
            "hull needs one per element of chemistry.elements. Turn on "
            "seeds.builtin, or add one-element structures to seeds.files or "
            "entries to hull.references."
        )
    return config


def _override_uri(config, uri: str | None):
    """Set the campaign's database URI by the one rule (:mod:`flywheel.db.uri`)."""
    from flywheel.db.uri import resolve_uri

    config.database.uri = resolve_uri(uri, config.database.uri)
    return config


def init_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel init``: an example campaign YAML plus FireWorks and jobflow files."""
    p = argparse.ArgumentParser(prog="flywheel init", description=init_main.__doc__)
    p.add_argument("directory", nargs="?", default=".", help="where to write")
    p.add_argument("--name", default="li-fe-o-demo", help="campaign name")
    p.add_argument("--uri", default=DEFAULT_URI,
                   help="MongoDB URI written into every file")
    # accepted for old scripts; SLURM is the only queue system the qadapters target
    p.add_argument("--cluster", choices=["slurm"], help=argparse.SUPPRESS)
    p.add_argument("--cpu-partition", default="cpu", help="partition for cpu jobs")
    p.add_argument("--gpu-partition", default="gpu", help="partition for gpu jobs")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per gpu job (--gres)")
    p.add_argument("--walltime", default="02:00:00", help="walltime per queue job")
    p.add_argument("--venv", help="virtual environment the jobs activate "
                   "(default: the current one)")
    args = p.parse_args(argv)
    from flywheel.launchers.fwfiles import write_example_campaign, write_fw_files

    d = Path(args.directory)
    files = write_fw_files(
        d, args.uri, venv=args.venv,
        partitions={"cpu": args.cpu_partition, "gpu": args.gpu_partition},
        gpus=args.gpus, walltime=args.walltime,
    )
    camp = d / "campaign.yaml"
    if camp.exists():
        print(f"kept existing {camp}")
    else:
        write_example_campaign(camp, args.name, args.uri)
        print(f"wrote {camp}")
    for f in files.values():
        print(f"wrote {f}")
    return 0


def run_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel run``: run a campaign end to end on this machine."""
    p = argparse.ArgumentParser(prog="flywheel run", description=run_main.__doc__)
    p.add_argument("campaign", help="campaign YAML")
    p.add_argument("--dir", help="campaign directory (default: campaigns/<name>)")
    p.add_argument("--uri", help="override database.uri")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-server", action="store_true",
                   help="stop the local database server when done")
    p.add_argument("--rerun-fizzled", action="store_true",
                   help="when resuming, rerun fizzled fireworks first")
    args = p.parse_args(argv)
    config = _override_uri(_load(args.campaign), args.uri)
    from flywheel.db.queries import find_materials, round_table
    from flywheel.db.stores import get_database
    from flywheel.launchers.local import run_local
    from flywheel.launchers.results_cli import round_table_text

    directory = Path(args.dir or Path("campaigns") / config.name).resolve()
    print(f"campaign {config.name}: {directory} on {config.database.uri}")
    try:
        run_local(config, directory, progress=not args.no_progress,
                  timeout=args.timeout, rerun_fizzled=args.rerun_fizzled)
    finally:
        db = get_database(config.database.uri)
        rows = round_table(db, config.name)
        if rows:
            print(round_table_text(rows))
        stable = find_materials(db, campaign=config.name, stable=True)
        known = sum(m.get("novelty") == "known" for m in stable)
        found = sum(bool(m.get("discovery")) for m in stable)
        print(f"{len(stable)} entries on the hull: {known} known (match a reference), "
              f"{found} new discoveries, {len(stable) - known - found} other "
              "(seeds, duplicates, or within the tolerance of the hull)")
        print(f"list them with: flywheel query {args.campaign} --discoveries "
              "(new) or --known (rediscoveries, with their ids)")
        if rows:
            try:
                print(f"report: {_write_report(config, directory / 'report')}")
            except Exception as exc:  # a plot must never hide the campaign's result
                print(f"no report written: {exc}", file=sys.stderr)
        if args.stop_server:
            from flywheel.db.server import LocalServer
            from flywheel.db.uri import uri_host, uri_port

            LocalServer(data_dir=directory / "db", host=uri_host(config.database.uri),
                        port=uri_port(config.database.uri)).stop()
    return 0


def recheck_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel recheck``: re-check the campaign's discoveries at r²SCAN fidelity."""
    p = argparse.ArgumentParser(prog="flywheel recheck", description=recheck_main.__doc__)
    p.add_argument("campaign", help="campaign YAML")
    p.add_argument("--dir", help="campaign directory (default: campaigns/<name>)")
    p.add_argument("--uri", help="override database.uri")
    p.add_argument("--submit-only", action="store_true",
                   help="add the re-check workflow to the LaunchPad and return "
                   "(cluster use: qlaunch runs it)")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    config = _override_uri(_load(args.campaign), args.uri)
    from flywheel.db.stores import get_database
    from flywheel.launchers.local import run_local, submit_recheck

    if args.submit_only:
        fw_id = submit_recheck(config)
        print(f"r2SCAN re-check of {config.name} submitted (firework {fw_id})")
        return 0
    directory = Path(args.dir or Path("campaigns") / config.name).resolve()
    run_local(config, directory, progress=not args.no_progress, timeout=args.timeout,
              workflow="recheck")
    doc = get_database(config.database.uri).rechecks.find_one(
        {"campaign": config.name, "fidelity": "r2scan"})
    if doc is None or not doc.get("n_selected"):
        print("no discoveries to re-check")
        return 0
    rate = doc["survival_rate"]
    print(f"r2SCAN re-check ({doc['oracle']}): {doc['n_survived']} of "
          f"{doc['n_checked']} checked discoveries stay on the hull"
          + (f" ({100 * rate:.0f} %)" if rate is not None else "")
          + f"; {doc['n_selected'] - doc['n_checked']} could not be judged")
    for n, row in doc["by_nelements"].items():
        print(f"  {n} elements: {row['survived']}/{row['checked']}")
    print(f"per material: flywheel query {args.campaign} --stable "
          "(field r2scan), or db.materials.find({'r2scan.survives': false})")
    return 0


def submit_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel submit``: add the campaign to the LaunchPad of its database."""
    p = argparse.ArgumentParser(prog="flywheel submit", description=submit_main.__doc__)
    p.add_argument("campaign", help="campaign YAML")
    p.add_argument("--uri", help="override database.uri")
    args = p.parse_args(argv)
    config = _override_uri(_load(args.campaign), args.uri)
    from flywheel.launchers.local import submit

    fw_id = submit(config)
    print(f"submitted campaign {config.name}: workflow with firework {fw_id}")
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel export``: the campaign workflow for stock ``lpad add`` (default), or
    the campaign's results as files (GNoME release layout, CIFs, extended XYZ, JSON)."""
    from flywheel.makers.hull.export import STRUCTURE_FORMATS

    p = argparse.ArgumentParser(prog="flywheel export", description=export_main.__doc__)
    p.add_argument("campaign", help="campaign YAML")
    p.add_argument("-o", "--output", default="-",
                   help="workflow: file (.yaml or .json), '-' writes YAML to stdout; "
                   "gnome and cif: a folder; extxyz and json: a file")
    p.add_argument("--format", default="workflow",
                   choices=["workflow", "gnome", *STRUCTURE_FORMATS],
                   help="workflow (the FireWorks workflow, default), gnome "
                   "(stable_materials_summary.csv, stable_materials_hull.csv, "
                   "by_id/ CIFs), cif, extxyz or json (ComputedStructureEntry list)")
    p.add_argument("--uri", help="override database.uri")
    sel = p.add_argument_group("which materials (gnome: default --stable; cif, "
                               "extxyz, json: default all)")
    sel.add_argument("--stable", action="store_true", help="only entries on the hull")
    sel.add_argument("--discoveries", action="store_true", help="only discoveries")
    sel.add_argument("--known", action="store_true",
                     help="only results that match a known material")
    sel.add_argument("--chemsys", help="phase diagram, e.g. Li-Fe-O (with subsystems)")
    sel.add_argument("--formula", help="reduced formula, e.g. LiFeO2")
    sel.add_argument("--max-ehull", type=float, help="energy above hull ≤ (eV/atom)")
    sel.add_argument("--round", type=int, help="oracle round")
    p.add_argument("--zip", action="store_true",
                   help="gnome: CIFs in by_id.zip instead of the by_id/ folder")
    args = p.parse_args(argv)
    if args.format != "workflow":
        from flywheel.config import load_campaign

        # read-only: the campaign file alone (its seed and reference files may be gone)
        return _export_results(_override_uri(load_campaign(args.campaign), args.uri),
                               args)
    config = _override_uri(_load(args.campaign), args.uri)
    from jobflow.managers.fireworks import flow_to_workflow

    from flywheel.workflows.campaign import CampaignMaker

    wf = flow_to_workflow(CampaignMaker().make(config))
    if args.output == "-":
        sys.stdout.write(wf.to_format("yaml"))
    else:
        wf.to_file(args.output)
        print(f"wrote {args.output}; add it with: lpad add {args.output}",
              file=sys.stderr)
    return 0


def _export_results(config, args: argparse.Namespace) -> int:
    """``flywheel export --format gnome|cif|extxyz|json``."""
    from flywheel.db.errors import check_reachable
    from flywheel.db.queries import material_filter
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.hull.export import export_gnome, export_materials

    if args.output == "-":
        print(f"--format {args.format} writes files: give -o", file=sys.stderr)
        return 2
    chosen = any([args.stable, args.discoveries, args.known, args.chemsys,
                  args.formula, args.max_ehull is not None, args.round is not None])
    query = material_filter(
        stable=True if args.stable or (args.format == "gnome" and not chosen) else None,
        discoveries=args.discoveries, known=args.known, chemsys=args.chemsys,
        formula=args.formula, max_ehull=args.max_ehull, round_index=args.round)
    check_reachable(config.database.uri)
    db = CampaignDB(config.database.uri, config.name)
    if args.format == "gnome":
        out = export_gnome(db, config, args.output, query, zip_cifs=args.zip)
        print(f"wrote {out['n_materials']} materials and {out['n_hull_entries']} hull "
              f"entries to {args.output} (GNoME layout: {out['summary']}, "
              f"{out['hull']}, {out['structures']})")
    else:
        out = export_materials(db, query, args.output, args.format)
        print(f"wrote {out['n_materials']} materials to {out['output']}")
    return 0


def recover_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel recover``: rerun lost (and optionally fizzled) fireworks."""
    p = argparse.ArgumentParser(prog="flywheel recover", description=recover_main.__doc__)
    p.add_argument("campaign", help="campaign YAML")
    p.add_argument("--uri", help="override database.uri")
    p.add_argument("--expiration-secs", type=float, default=None,
                   help="a RUNNING firework silent for this long is lost "
                   "(default: 4 pings = 240 s)")
    p.add_argument("--fizzled", action="store_true", help="rerun fizzled fireworks too")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    config = _override_uri(_load(args.campaign), args.uri)
    import json

    from flywheel.db.errors import check_reachable
    from flywheel.db.stores import make_launchpad
    from flywheel.launchers.recover import DEFAULT_EXPIRATION_SECS, recover

    check_reachable(config.database.uri)
    out = recover(
        make_launchpad(config.database.uri), campaign=config.name,
        expiration_secs=(DEFAULT_EXPIRATION_SECS if args.expiration_secs is None
                         else args.expiration_secs),
        fizzled=args.fizzled,
    )
    if args.json:
        print(json.dumps(out))
    else:
        for key, ids in out.items():
            print(f"{key:>12}: {len(ids)} firework(s) {ids if ids else ''}")
    return 0


def report_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel report``: the campaign report, one HTML page plus PNGs."""
    p = argparse.ArgumentParser(prog="flywheel report", description=report_main.__doc__)
    p.add_argument("campaign", help="campaign YAML")
    p.add_argument("-o", "--output",
                   help="folder (default: campaigns/<name>/report)")
    p.add_argument("--uri", help="override database.uri")
    args = p.parse_args(argv)
    from flywheel.config import load_campaign
    from flywheel.db.errors import check_reachable

    # read-only: the campaign file alone (its seed and reference files may be gone)
    config = _override_uri(load_campaign(args.campaign), args.uri)
    check_reachable(config.database.uri)
    page = _write_report(config, Path(args.output or Path("campaigns") / config.name
                                      / "report"))
    print(f"report: {page}")
    return 0


def _write_report(config, directory: Path) -> Path:
    from flywheel.db.stores import CampaignDB
    from flywheel.makers.hull.report import write_report

    return write_report(CampaignDB(config.database.uri, config.name), config, directory)


def _commands() -> dict[str, Callable[[Sequence[str] | None], int]]:
    from flywheel.launchers import db_cli, results_cli, science_cli

    return {
        "init": init_main,
        "run": run_main,
        "submit": submit_main,
        "export": export_main,
        "report": report_main,
        "status": results_cli.status_main,
        "query": results_cli.query_main,
        "recover": recover_main,
        "recheck": recheck_main,
        "db": db_cli.main,
        "conductivity": science_cli.conductivity_main,
        "screen": science_cli.screen_main,
        "potential": science_cli.potential_main,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flywheel`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(__version__)
        return 0
    commands = _commands()
    if argv[0] not in commands:
        print(f"flywheel: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    from pymongo.errors import PyMongoError

    from flywheel.config import ConfigError
    from flywheel.db.errors import DatabaseUnreachableError, ServerError
    from flywheel.settings import SettingsError

    try:
        return commands[argv[0]](argv[1:])
    except (ConfigError, SettingsError, DatabaseUnreachableError, ServerError) as err:
        print(f"flywheel {argv[0]}: error: {err}", file=sys.stderr)
        return 1
    except PyMongoError as err:
        print(f"flywheel {argv[0]}: database error: {str(err).splitlines()[0][:300]}",
              file=sys.stderr)
        return 1
    except (RuntimeError, TimeoutError) as err:
        print(f"flywheel {argv[0]}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
