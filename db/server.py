"""Manage a local SecantusDB server for a campaign.

SecantusDB (``pip install secantusdb``) is a MongoDB-wire-protocol server on
WiredTiger.  It is GPL-2.0 licensed, so flywheel never imports it: it only
runs ``secantusd-py`` as a separate, detached child process and talks to it
through pymongo.  Under ``data_dir`` live ``data/`` (WiredTiger home),
``secantusd.pid`` (JSON), ``secantusd.log`` (previous run: ``.log.1``) and
``secantusd.toml`` (passed with ``--config``; created if missing).

Observed behaviour of secantusd-py 0.7.0b3 (2-core machine, Python 3.11):

* Start-up: ``ping`` answers 0.4-0.8 s after spawning, fresh or existing data.
* SIGTERM/SIGINT: a clean shutdown in ~2.2 s, exit status 0.  The handler
  closes the listening socket, joins the accept thread (2 s timeout, nearly
  always used up: closing a socket does not wake a blocked ``accept()`` on
  Linux), closes client connections (drain up to 5 s), aborts transactions,
  closes WiredTiger.  SIGKILL lost no acknowledged write in our test (the
  WiredTiger journal is written, not fsynced, at commit).
* A second server on the same storage dies at once ("WiredTiger database is
  already being managed by another process"); a busy port kills it with
  ``OSError: [Errno 98] Address already in use``.
* Without ``--config`` it reads ``./secantusd.toml``, ``~/.secantus/...`` or
  ``/etc/secantus/...``; we pass our own file so a stray one cannot turn on
  auth.  Without ``--standalone`` it claims to be a replica set ``secantus``;
  with it a plain URI works, but change streams are refused (as by mongod).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.db.errors import ServerError, ping_error
from flywheel.db.uri import host_uri, is_loopback_host, uri_port
from flywheel.settings import DEFAULT_URI, get_settings

logger = logging.getLogger(__name__)

__all__ = ["LocalServer", "ServerError", "is_reachable"]

PIDFILE_NAME = "secantusd.pid"
LOGFILE_NAME = "secantusd.log"
CONFIG_NAME = "secantusd.toml"
STORAGE_NAME = "data"
_LOCKFILE_NAME = ".secantusd.lock"
_INSTALL_HINT = "pip install secantusdb (or pip install 'materials-flywheel[local]')"
# Our command-line flags override this file; users may add [storage] cache_size.
_CONFIG_TEXT = "# SecantusDB config of a flywheel-managed server; see secantusd-py -h\n"


def is_reachable(uri: str, timeout_ms: int = 2000) -> bool:
    """Return whether a MongoDB server at ``uri`` answers ``ping``.

    Parameters
    ----------
    uri
        MongoDB connection string.
    timeout_ms
        Server-selection and connect timeout, in milliseconds.
    """
    return ping_error(uri, timeout_ms) is None


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return whether something accepts TCP connections at ``host:port``."""
    # pymongo's ping waits out its whole timeout on a closed port; this fails
    # at once on "connection refused".
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Return whether ``pid`` is a live (non-zombie) process."""
    if proc is not None and proc.pid == pid:
        return proc.poll() is None
    # Our own children are reaped by a thread (see _spawn), so a zombie lasts
    # only an instant and need not be told apart here.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


def _storage_arg(pid: int) -> Path | None:
    """``--storage-path`` of ``pid``: ``None`` without /proc, ``/`` if absent."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    args = raw.decode(errors="replace").split("\0")
    if "--storage-path" not in args:
        return Path("/")
    return Path(args[args.index("--storage-path") + 1])


@dataclass
class LocalServer:
    """A SecantusDB server run as a detached child process; a context manager.

    Parameters
    ----------
    data_dir
        Directory holding the server's data, pidfile, log and config.
    host
        Address to listen on; must be a loopback address, because the
        server runs without authentication.
    port
        TCP port to listen on (default: the port of ``DEFAULT_URI``, 27118).
    executable
        Name or path of the SecantusDB launcher (default: the
        ``FLYWHEEL_SECANTUS_EXECUTABLE`` setting, ``secantusd-py``).
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=lambda: uri_port(DEFAULT_URI))
    executable: str = field(
        default_factory=lambda: get_settings().SECANTUS_EXECUTABLE)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Absolute, because the child runs with data_dir as its cwd and the
        # pidfile check compares paths with the child's command line.
        self.data_dir = Path(self.data_dir).expanduser().absolute()
        if not is_loopback_host(self.host):
            raise ValueError(
                f"refusing to serve the database on {self.host!r}: the local "
                "server has no authentication, so only loopback addresses "
                "(127.0.0.1, ::1, localhost) are allowed"
            )
        self.port = int(self.port)

    @property
    def uri(self) -> str:
        """Connection string, e.g. ``mongodb://127.0.0.1:27118``."""
        return host_uri(self.host, self.port)

    @property
    def storage_path(self) -> Path:
        """WiredTiger home directory."""
        return self.data_dir / STORAGE_NAME

    @property
    def pidfile(self) -> Path:
        """JSON file describing the running server."""
        return self.data_dir / PIDFILE_NAME

    @property
    def log_file(self) -> Path:
        """Server stdout and stderr."""
        return self.data_dir / LOGFILE_NAME

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop of this data directory across processes."""
        with open(self.data_dir / _LOCKFILE_NAME, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
            yield

    def _read_pidfile(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _live_pid(self, info: dict[str, Any] | None) -> int | None:
        """Return the pidfile's pid if it is our server and still alive."""
        if not info or not isinstance(info.get("pid"), int):
            return None
        pid: int = info["pid"]
        if not _pid_alive(pid, self._proc):
            return None
        # A stale pidfile's pid may now belong to an unrelated process, which
        # stop() must never signal: check it serves our storage path.
        storage = _storage_arg(pid)
        if storage is not None and storage.resolve() != self.storage_path.resolve():
            logger.warning("pid %d of %s is not our server", pid, self.pidfile)
            return None
        return pid

    def _log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_file.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def _resolve_executable(self) -> str:
        # The venv's bin/ is often not on PATH when flywheel runs as
        # /path/to/venv/bin/python -m ..., yet secantusdb is installed there.
        exe, venv_bin = self.executable, str(Path(sys.executable).parent)
        found = shutil.which(exe) or shutil.which(exe, path=venv_bin)
        if found:
            return str(Path(found).absolute())
        raise ServerError(
            f"the SecantusDB server executable {exe!r} was not found; "
            f"install it with: {_INSTALL_HINT}"
        )

    def _wait_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not _pid_alive(pid, self._proc):
                code = self._proc.returncode if self._proc is not None else None
                how = f" with exit code {code}" if code is not None else ""
                raise ServerError(
                    f"secantusd-py exited during start-up{how}; see {self.log_file}",
                    self._log_tail(),
                )
            if _port_open(self.host, self.port) and is_reachable(self.uri, 1000):
                return
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"secantusd-py (pid {pid}) did not answer ping at {self.uri} "
                    f"within {timeout:g} s; see {self.log_file}",
                    self._log_tail(),
                )
            time.sleep(0.1)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _pid_alive(pid, self._proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not _pid_alive(pid, self._proc)

    def start(self, timeout: float = 30) -> None:
        """Start the server unless it is already running.

        Parameters
        ----------
        timeout
            Seconds to wait for the server to answer ``ping``.

        Raises
        ------
        ServerError
            If the executable is missing, the port is taken by another
            program, or the server died or stayed silent during start-up.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            info = self._read_pidfile()
            pid = self._live_pid(info)
            if pid is not None and info is not None:
                where = (info.get("host", self.host), info.get("port"))
                if where != (self.host, self.port):
                    raise ServerError(
                        f"the server of {self.data_dir} is already running at "
                        f"{host_uri(*where)} (pid {pid}); stop it or use that port"
                    )
                # Alive but maybe still starting (a concurrent `start`).
                self._wait_ready(pid, timeout)
                logger.info("SecantusDB already running at %s", self.uri)
                return
            exe = self._resolve_executable()
            if _port_open(self.host, self.port):
                raise ServerError(
                    f"port {self.port} on {self.host} is already in use by another "
                    f"program, not the flywheel server of {self.data_dir}; stop it "
                    "or choose another port"
                )
            self._spawn(exe, timeout)

    def _spawn(self, exe: str, timeout: float) -> None:
        self.storage_path.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / CONFIG_NAME
        if not config.exists():
            config.write_text(_CONFIG_TEXT)
        if self.log_file.exists():
            os.replace(self.log_file, self.log_file.with_name(LOGFILE_NAME + ".1"))
        cmd = [exe, "--config", str(config), "--host", self.host.strip("[]")]
        cmd += ["--port", str(self.port), "--storage-path", str(self.storage_path)]
        cmd += ["--standalone"]
        logger.info("starting SecantusDB: %s", " ".join(cmd))
        with open(self.log_file, "ab") as log:
            # Own session: the server must outlive the CLI process that
            # started it and not receive the terminal's Ctrl-C.
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._proc = proc
        # Reap the server when it exits (no zombie in a long-lived caller, no
        # "still running" ResourceWarning when this object is dropped).
        threading.Thread(target=proc.wait, name="secantusd-reaper", daemon=True).start()
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        info = dict(pid=proc.pid, host=self.host, port=self.port, uri=self.uri)
        info.update(started_at=now, storage_path=str(self.storage_path), executable=exe)
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, self.pidfile)  # atomic: status() never reads half a file
        try:
            self._wait_ready(proc.pid, timeout)
        except ServerError:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            self.pidfile.unlink(missing_ok=True)
            raise
        logger.info("SecantusDB ready at %s (pid %d)", self.uri, proc.pid)

    def stop(self, timeout: float = 20) -> bool:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds.

        Parameters
        ----------
        timeout
            Seconds to wait for a clean exit after SIGTERM (it takes ~2 s).

        Returns
        -------
        bool
            ``True`` if a running server was stopped.
        """
        if not self.data_dir.is_dir():  # never started here; do not create it
            return False
        with self._lock():
            pid = self._live_pid(self._read_pidfile())
            if pid is None:
                self.pidfile.unlink(missing_ok=True)
                return False
            logger.info("stopping SecantusDB (pid %d)", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                logger.warning("pid %d ignored SIGTERM for %g s; killing", pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    # start_new_session made the server a process-group leader.
                    os.killpg(pid, signal.SIGKILL)
                if not self._wait_exit(pid, 10):
                    raise ServerError(f"could not kill SecantusDB server pid {pid}")
            self.pidfile.unlink(missing_ok=True)
            self._proc = None
            return True

    def status(self) -> dict[str, Any]:
        """Describe the server.

        Returns
        -------
        dict
            ``running`` (pidfile names a live server), ``pid``, ``uri``,
            ``host``, ``port`` (from the pidfile when running), ``data_dir``,
            ``reachable`` (``ping`` answered), ``started_at``, ``log_file``.
        """
        info = self._read_pidfile()
        pid = self._live_pid(info)
        running = pid is not None and info is not None
        host, port = self.host, self.port
        if running and info is not None:
            host, port = info.get("host", host), int(info.get("port", port))
        uri = host_uri(host, port)
        out = dict(running=running, pid=pid, uri=uri, host=host, port=port)
        out["data_dir"], out["log_file"] = str(self.data_dir), str(self.log_file)
        out["reachable"] = _port_open(host, port) and is_reachable(uri, 1000)
        out["started_at"] = info.get("started_at") if running and info else None
        return out

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
