"""``flywheel status`` and ``flywheel query``: read results from the database."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def _audit(row: dict[str, Any]) -> str | None:
    a = row.get("audit") or {}
    return f"{a['hits']}/{a['n']}" if a.get("n") else None


def _enrichment(row: dict[str, Any], key: str = "enrichment") -> str | None:
    e = row.get(key) or {}
    if e.get("lo") is None:
        return None
    if e.get("value") is not None:
        value = f"{e['value']:.1f}"
    else:  # no audit hit: infinite if the filter hit, else 0/0
        value = "inf" if (row.get("picks") or {}).get("hits") else "n/a"
    return f"{value} [{e['lo']:.1f}-{e['hi']:.1f}]"


def _mae(row: dict[str, Any], key: str) -> float | None:
    mae = (row.get(key) or {}).get("mae")
    return None if mae is None else 1000 * mae


#: (field or function of the row, heading, format). Enrichment: the hit rate of the
#: filter's picks over the audit's (base rate), 90 % interval in brackets.
ROUND_COLUMNS: list[tuple[Any, str, str]] = [
    ("round", "round", "{}"),
    ("generated", "gen", "{}"),
    ("unique", "unique", "{}"),
    ("unscorable", "unscored", "{}"),
    ("pool", "pool", "{}"),
    ("selected", "sel", "{}"),
    ("evaluated", "eval", "{}"),
    ("failed", "fail", "{}"),
    ("stable_found", "stable", "{}"),
    ("hit_rate", "hit rate", "{:.0%}"),
    (_audit, "audit hits", "{}"),
    ("base_rate", "base rate", "{:.0%}"),
    (_enrichment, "enrichment [90%]", "{}"),
    (lambda r: _mae(r, "picks"), "MAE picks meV/at", "{:.0f}"),
    (lambda r: _mae(r, "audit"), "MAE audit", "{:.0f}"),
    ("n_known", "known", "{}"),
    ("n_new", "new", "{}"),
    ("n_stable", "hull", "{}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("train_seconds_per_epoch", "s/epoch", "{:.2f}"),
]


def format_table(rows: list[dict[str, Any]], columns: list[tuple[Any, str, str]]) -> str:
    """A plain-text table; missing values print as '-'."""
    def cell(row: dict, key: Any, fmt: str) -> str:
        v = key(row) if callable(key) else row.get(key)
        if v is None:
            return "-"
        return fmt.format(v)

    body = [[cell(r, k, f) for k, _, f in columns] for r in rows]
    heads = [h for _, h, _ in columns]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def round_table_text(rows: list[dict[str, Any]]) -> str:
    """The per-round summary table printed after a run."""
    return format_table(rows, ROUND_COLUMNS)


def _uri(args: argparse.Namespace) -> str:
    """``--uri``, else ``FLYWHEEL_DB_URI``, else the campaign file's, else the default
    (:func:`flywheel.db.uri.resolve_uri`)."""
    from flywheel.db.uri import resolve_uri

    campaign = None
    if args.campaign_file and not args.uri:
        from flywheel.config import load_campaign

        campaign = load_campaign(args.campaign_file).database.uri
    return resolve_uri(args.uri, campaign)


def _campaign(args: argparse.Namespace) -> str | None:
    if args.campaign:
        return args.campaign
    if args.campaign_file:
        from flywheel.config import load_campaign

        return load_campaign(args.campaign_file).name
    return None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign_file", nargs="?", help="campaign YAML (for URI and name)")
    p.add_argument("--uri", help="MongoDB URI (default: settings or the local server)")
    p.add_argument("--campaign", help="campaign name (default: all campaigns)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _conductivity(db: Any, campaign: str | None, args: argparse.Namespace) -> int:
    """The ``conductivity`` collection, highest room-temperature conductivity first."""
    from flywheel.launchers.science_cli import conductivity_table

    q: dict[str, Any] = {"campaign": campaign} if campaign else {}
    if args.formula:
        from pymatgen.core import Composition

        q["formula"] = Composition(args.formula).reduced_formula
    cur = db["conductivity"].find(q, {"_id": 0}).sort(
        [("conductivity_target", -1), ("material_id", 1)])
    rows = list(cur.limit(args.limit) if args.limit else cur)
    if args.json:
        print(json.dumps(rows, default=str, indent=1))
    else:
        print(conductivity_table(rows))
    print(f"{len(rows)} conductivity result(s)", file=sys.stderr)
    return 0


def status_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel status``: rounds and fireworks per round, category and state."""
    p = argparse.ArgumentParser(prog="flywheel status", description=status_main.__doc__)
    _common(p)
    args = p.parse_args(argv)
    from flywheel.db.errors import check_reachable
    from flywheel.db.queries import fw_status, round_table
    from flywheel.db.stores import get_database

    uri = _uri(args)
    check_reachable(uri)
    db = get_database(uri)
    name = _campaign(args)
    fws = fw_status(db, name)
    # "lost": RUNNING fireworks whose rocket stopped pinging (FireWorks' detection).
    from flywheel.db.stores import make_launchpad
    from flywheel.launchers.recover import DEFAULT_EXPIRATION_SECS, find_lost

    lost = set(find_lost(make_launchpad(uri), campaign=name,
                         expiration_secs=DEFAULT_EXPIRATION_SECS))
    if lost:
        from flywheel.db.tags import TAG, fw_tag

        for fw in db["fireworks"].find({"fw_id": {"$in": sorted(lost)}},
                                       {"spec._category": 1, f"spec.{TAG}": 1}):
            meta = fw_tag(fw)
            fws.append({"campaign": meta["campaign"], "round": meta["round"],
                        "category": fw["spec"].get("_category"), "state": "LOST",
                        "count": 1})
    names = [name] if name else sorted({r["campaign"] for r in fws})
    rounds = {n: round_table(db, n) for n in names}
    if args.json:
        print(json.dumps({"fireworks": fws, "rounds": rounds}, default=str, indent=1))
        return 0
    states = ["READY", "WAITING", "RESERVED", "RUNNING", "COMPLETED", "FIZZLED",
              "LOST"]
    for n in names:
        print(f"campaign {n}")
        table: dict[tuple, dict[str, Any]] = {}
        for r in fws:
            if r["campaign"] != n:
                continue
            row = table.setdefault((r["round"], r["category"]),
                                   {"round": r["round"], "category": r["category"]})
            row[r["state"]] = row.get(r["state"], 0) + r["count"]
        cols = [("round", "round", "{}"), ("category", "category", "{}")] + [
            (s, s.lower(), "{}") for s in states
        ]
        print(format_table(
            [{s: 0 for s in states} | v for _, v in sorted(table.items())], cols
        ))
        if rounds[n]:
            print()
            print(round_table_text(rounds[n]))
    return 0


def query_main(argv: Sequence[str] | None = None) -> int:
    """``flywheel query``: materials from the campaign database."""
    p = argparse.ArgumentParser(prog="flywheel query", description=query_main.__doc__)
    _common(p)
    p.add_argument("--stable", action="store_true", help="only entries on the hull")
    p.add_argument("--discoveries", action="store_true",
                   help="only discoveries: new by structure (no reference or earlier "
                   "result matches) and on the hull")
    p.add_argument("--known", action="store_true",
                   help="only results that match a known material (a reference), "
                   "with its id")
    p.add_argument("--chemsys", help="phase diagram, e.g. Li-Fe-O (with subsystems)")
    p.add_argument("--formula", help="reduced formula, e.g. LiFeO2")
    p.add_argument("--max-ehull", type=float, help="energy above hull ≤ (eV/atom)")
    p.add_argument("--round", type=int, help="oracle round")
    p.add_argument("--nelements", type=int, help="number of elements")
    p.add_argument("--layered", action="store_true",
                   help="only materials the layered screen passed (flywheel screen)")
    p.add_argument("--li-conductor", action="store_true",
                   help="only Li-ion conductor candidates (flywheel screen)")
    p.add_argument("--conductivity", action="store_true",
                   help="the MD conductivity results (flywheel conductivity) instead "
                   "of materials")
    p.add_argument("--limit", type=int, default=0, help="at most this many rows")
    p.add_argument("--structures", action="store_true",
                   help="include structures (with --json)")
    args = p.parse_args(argv)
    from flywheel.db.errors import check_reachable
    from flywheel.db.queries import find_materials
    from flywheel.db.stores import get_database

    uri = _uri(args)
    check_reachable(uri)
    if args.conductivity:
        return _conductivity(get_database(uri), _campaign(args), args)
    rows = find_materials(
        get_database(uri), limit=args.limit, with_structure=args.structures,
        campaign=_campaign(args), stable=True if args.stable else None,
        discoveries=args.discoveries, known=args.known, chemsys=args.chemsys,
        formula=args.formula,
        max_ehull=args.max_ehull, round_index=args.round, nelements=args.nelements,
        layered=args.layered, li_conductor=args.li_conductor,
    )
    if args.json:
        print(json.dumps(rows, default=str, indent=1))
        return 0
    cols = [("material_id", "id", "{}"), ("formula", "formula", "{}"),
            ("chemsys", "chemsys", "{}"), ("round", "round", "{}"),
            ("generator", "generator", "{}"),
            ("energy_per_atom", "E eV/at", "{:.4f}"),
            ("e_above_hull", "E_hull eV/at", "{:.4f}"),
            ("decomposition_energy", "E_decomp eV/at", "{:.4f}"),
            ("stable", "stable", "{}"), ("novelty", "novelty", "{}"),
            ("known_id", "matches", "{}"), ("discovery", "discovery", "{}")]
    if len({r["campaign"] for r in rows}) > 1:
        cols.insert(0, ("campaign", "campaign", "{}"))
    print(format_table(rows, cols))
    print(f"{len(rows)} material(s)", file=sys.stderr)
    return 0
