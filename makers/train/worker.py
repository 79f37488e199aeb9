"""Train several MACE models one after another in one process.

``python -m flywheel.makers.train.worker SPEC.json`` is started by
:func:`flywheel.makers.train.core.train_ensemble`: one process per group of ensemble
members, so torch, e3nn and MACE are imported (and, on a GPU, CUDA is started) once
per group instead of once per member.  Each member still runs MACE's own trainer,
``mace.cli.run_train.run``, with the arguments the parent built; between members
the worker resets what that trainer leaves behind in the process (root-logger
handlers and filters, torch's default dtype, the working directory), and sends the
member's output, Python's and C's, to its own log file.

The spec is JSON: ``{"members": [{"argv": [...], "log": path, "cwd": path}],
"report": path}``.  The report, rewritten after every member, is JSON with
``startup_s`` (seconds from the interpreter's start to MACE being imported) and per
member ``ok``, ``seconds`` and, on failure, ``error``.  A failing member does not
stop the others.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path


def _reset_logging() -> None:
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    root.filters.clear()


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 (print, logging, C++ warnings) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def train_members(spec: dict) -> dict:
    """Train the spec's members in order; returns (and writes) the report."""
    import torch
    from mace import tools
    from mace.cli.run_train import run

    report = {"startup_s": time.perf_counter() - _T0, "members": []}
    report_path = Path(spec["report"])
    home = os.getcwd()
    dtype = torch.get_default_dtype()
    for member in spec["members"]:
        start = time.perf_counter()
        entry: dict = {"log": member["log"]}
        with _output_to(Path(member["log"])):
            try:
                os.chdir(member["cwd"])
                _reset_logging()
                run(tools.build_default_arg_parser().parse_args(member["argv"]))
                entry["ok"] = True
            except BaseException as err:  # a member's failure is reported
                traceback.print_exc()
                entry["ok"] = False
                entry["error"] = f"{type(err).__name__}: {err}"
                if isinstance(err, KeyboardInterrupt):
                    raise
            finally:
                _reset_logging()
                torch.set_default_dtype(dtype)
                os.chdir(home)
        entry["seconds"] = time.perf_counter() - start
        report["members"].append(entry)
        report_path.write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``SPEC.json``; exit 0 when every member trained."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m flywheel.makers.train.worker SPEC.json",
              file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    report = train_members(spec)
    return 0 if all(m["ok"] for m in report["members"]) else 1


if __name__ == "__main__":
    sys.exit(main())
