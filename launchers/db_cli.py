"""``flywheel db``: start, stop and inspect the local SecantusDB server.

Examples
--------
.. code-block:: console

    $ flywheel db start --dir ./my-campaign/db
    $ flywheel db status --dir ./my-campaign/db --json
    $ flywheel db stop --dir ./my-campaign/db
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from flywheel.db.uri import uri_port
from flywheel.settings import DEFAULT_URI

logger = logging.getLogger(__name__)

__all__ = ["build_parser", "main"]

DEFAULT_DIR = "./flywheel-db"


def build_parser() -> argparse.ArgumentParser:
    """Build the ``flywheel db`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        Parser with the ``start``, ``stop`` and ``status`` sub-commands.
    """
    parser = argparse.ArgumentParser(
        prog="flywheel db",
        description="Manage a local SecantusDB (MongoDB-compatible) server.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        default=DEFAULT_DIR,
        help=f"server directory: data, pidfile and log (default: {DEFAULT_DIR})",
    )
    common.add_argument(
        "--port",
        type=int,
        default=uri_port(DEFAULT_URI),
        help=f"TCP port (default: {uri_port(DEFAULT_URI)}, the default URI's)",
    )
    common.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = sub.add_parser("start", parents=[common], help="start the server")
    start.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for readiness"
    )
    stop = sub.add_parser("stop", parents=[common], help="stop the server")
    stop.add_argument(
        "--timeout", type=float, default=20.0, help="seconds before SIGKILL"
    )
    status = sub.add_parser("status", parents=[common], help="show server status")
    status.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _format_status(info: dict[str, Any]) -> str:
    state = "running" if info["running"] else "not running"
    lines = [f"SecantusDB {state} (data dir {info['data_dir']})"]
    if info["running"]:
        lines.append(f"  pid:       {info['pid']}  (since {info['started_at']})")
    lines.append(f"  uri:       {info['uri']}")
    lines.append(f"  reachable: {'yes' if info['reachable'] else 'no'}")
    lines.append(f"  log:       {info['log_file']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flywheel db``.

    Parameters
    ----------
    argv
        Arguments after ``db``; ``None`` means ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 when the server could not be managed (a one-line
        message is printed on stderr), 2 for usage errors.
    """
    args = build_parser().parse_args(None if argv is None else list(argv))
    # Imported here so `flywheel --help` and other commands stay fast.
    from flywheel.db.errors import ServerError
    from flywheel.db.server import LocalServer

    try:
        server = LocalServer(data_dir=args.dir, host=args.host, port=args.port)
        if args.command == "start":
            server.start(timeout=args.timeout)
            info = server.status()
            print(f"SecantusDB running at {info['uri']} (pid {info['pid']}, "
                  f"data dir {info['data_dir']})")  # fmt: skip
        elif args.command == "stop":
            stopped = server.stop(timeout=args.timeout)
            print("SecantusDB stopped" if stopped else "SecantusDB was not running")
        else:
            info = server.status()
            print(json.dumps(info, indent=2) if args.json else _format_status(info))
    except (ServerError, ValueError, OSError) as exc:
        # ServerError.message is the one-line summary; the log tail stays in
        # the log file the message points to.
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        print(f"flywheel db {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
