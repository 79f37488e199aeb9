"""Tests for the local SecantusDB server manager and ``flywheel db``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.db.errors import DatabaseUnreachableError, ServerError, check_reachable
from flywheel.db.server import LocalServer, is_reachable
from flywheel.launchers import db_cli

pymongo = pytest.importorskip("pymongo")

pytestmark = pytest.mark.skipif(
    shutil.which("secantusd-py") is None, reason="secantusdb is not installed"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    """Yield a started server on a free port; stop it afterwards."""
    srv = LocalServer(tmp_path / "db", port=_free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_start_stop_restart_keeps_data(tmp_path: Path) -> None:
    """Data written before a stop is there after the next start."""
    srv = LocalServer(tmp_path / "db", port=_free_port())
    t0 = time.monotonic()
    srv.start()
    try:
        startup = time.monotonic() - t0
        assert startup < 30
        assert is_reachable(srv.uri)
        client = pymongo.MongoClient(srv.uri, serverSelectionTimeoutMS=5000)
        client.flywheel_test.things.insert_one({"name": "NaCl", "e_hull": 0.0})
        client.close()

        info = srv.status()
        assert info["running"] is True
        assert info["reachable"] is True
        assert info["uri"] == srv.uri == f"mongodb://127.0.0.1:{srv.port}"
        assert isinstance(info["pid"], int)
        pidfile = json.loads(srv.pidfile.read_text())
        assert pidfile["pid"] == info["pid"]
        assert pidfile["port"] == srv.port
    finally:
        assert srv.stop() is True

    assert not srv.pidfile.exists()
    after = srv.status()
    assert after["running"] is False
    assert after["reachable"] is False
    assert srv.stop() is False  # nothing left to stop

    # A fresh object on the same directory sees the same data.
    again = LocalServer(tmp_path / "db", port=srv.port)
    with again:
        client = pymongo.MongoClient(again.uri, serverSelectionTimeoutMS=5000)
        doc = client.flywheel_test.things.find_one({"name": "NaCl"})
        client.close()
        assert doc is not None
        assert doc["e_hull"] == 0.0
    assert not again.status()["running"]


def test_start_is_idempotent(server: LocalServer) -> None:
    """A second start, from any object, adopts the running server."""
    pid = server.status()["pid"]
    server.start()
    # Another object for the same directory adopts the running server too.
    LocalServer(server.data_dir, port=server.port).start()
    assert server.status()["pid"] == pid


def test_start_on_other_port_while_running_is_refused(server: LocalServer) -> None:
    """One data directory cannot be served on two ports."""
    other = LocalServer(server.data_dir, port=_free_port())
    with pytest.raises(ServerError, match="already running"):
        other.start()


def test_stop_from_another_object(server: LocalServer) -> None:
    """Stop works from a fresh object, as the CLI does it."""
    pid = server.status()["pid"]
    assert LocalServer(server.data_dir, port=server.port).stop() is True
    assert not server.status()["running"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_port_taken_by_another_program(tmp_path: Path) -> None:
    """A foreign listener on the port gives a clear error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        srv = LocalServer(tmp_path / "db", port=port)
        with pytest.raises(ServerError, match="already in use"):
            srv.start()
    assert not srv.pidfile.exists()


def test_missing_executable(tmp_path: Path) -> None:
    """A missing executable tells how to install it."""
    srv = LocalServer(
        tmp_path / "db", port=_free_port(), executable="no-such-secantusd"
    )
    with pytest.raises(ServerError, match="pip install secantusdb"):
        srv.start()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.org", "::"])
def test_non_loopback_host_refused(tmp_path: Path, host: str) -> None:
    """The unauthenticated server never listens off-host."""
    with pytest.raises(ValueError, match="loopback"):
        LocalServer(tmp_path / "db", host=host)


def test_loopback_hosts_accepted(tmp_path: Path) -> None:
    """IPv6 and name loopback hosts give valid URIs."""
    assert LocalServer(tmp_path, host="::1", port=1234).uri == "mongodb://[::1]:1234"
    assert LocalServer(tmp_path, host="localhost").uri == "mongodb://localhost:27118"


def test_check_reachable_closed_port_fails_fast() -> None:
    """A closed port fails within the timeout, naming the URI."""
    uri = f"mongodb://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnreachableError) as info:
        check_reachable(uri)
    assert time.monotonic() - t0 < 6
    message = str(info.value)
    assert uri in message
    assert "flywheel db start --dir" in message
    assert "FLYWHEEL_DB_URI" in message


def test_check_reachable_redacts_password() -> None:
    """Passwords never appear in the error message."""
    uri = f"mongodb://alice:s3cret@127.0.0.1:{_free_port()}/db"
    with pytest.raises(DatabaseUnreachableError) as info:
        check_reachable(uri, timeout_ms=300)
    assert "s3cret" not in str(info.value)
    assert "alice:***@" in str(info.value)


def test_check_reachable_ok(server: LocalServer) -> None:
    """A running server passes the check."""
    check_reachable(server.uri)


def test_cli_status_json_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status --json`` prints valid JSON with no server."""
    port = _free_port()
    rc = db_cli.main(
        ["status", "--dir", str(tmp_path / "db"), "--port", str(port), "--json"]
    )
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["running"] is False
    assert info["reachable"] is False
    assert info["uri"] == f"mongodb://127.0.0.1:{port}"


def test_cli_start_status_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI round trip: start, status, stop."""
    args = ["--dir", str(tmp_path / "db"), "--port", str(_free_port())]
    try:
        assert db_cli.main(["start", *args]) == 0
        assert "running at" in capsys.readouterr().out
        assert db_cli.main(["status", *args, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["running"] is True
        assert info["reachable"] is True
    finally:
        assert db_cli.main(["stop", *args]) == 0
    assert "stopped" in capsys.readouterr().out


def test_cli_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ServerError becomes one line on stderr and exit code 1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = str(sock.getsockname()[1])
        rc = db_cli.main(["start", "--dir", str(tmp_path / "db"), "--port", port])
    assert rc == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "already in use" in err
    assert "Traceback" not in err


# FireWorks' object loader walks its own packages, tests included, whose
# unregistered marks would otherwise clutter the report.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
def test_fireworks_rocket_completes(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FireWorks rocket runs to COMPLETED against the server."""
    fireworks = pytest.importorskip("fireworks")
    from fireworks.core.rocket_launcher import launch_rocket
    from fireworks.user_objects.firetasks.script_task import ScriptTask

    # FireWorks 2.1.x does not take the database name from the URI in
    # uri_mode: without name= it raises "Must specify a database name".
    lp = fireworks.LaunchPad(
        host=f"{server.uri}/fw_test", uri_mode=True, name="fw_test"
    )
    lp.reset("", require_password=False)
    fw = fireworks.Firework(ScriptTask.from_str("echo hi"), name="hello")
    lp.add_wf(fireworks.Workflow([fw]))

    launch_dir = tmp_path / "launches"
    launch_dir.mkdir()
    monkeypatch.chdir(launch_dir)
    assert launch_rocket(lp, fireworks.FWorker())

    fw_id = lp.get_fw_ids()[0]
    assert lp.get_fw_by_id(fw_id).state == "COMPLETED"
    assert lp.get_wf_by_fw_id(fw_id).state == "COMPLETED"
    lp.connection.close()


def test_stale_pidfile_of_dead_process(tmp_path: Path) -> None:
    """A pidfile left by a dead server does not block a start."""
    srv = LocalServer(tmp_path / "db", port=_free_port())
    srv.data_dir.mkdir()
    proc = subprocess.Popen(["true"])
    proc.wait()
    srv.pidfile.write_text(json.dumps({"pid": proc.pid, "port": srv.port}))
    assert srv.status()["running"] is False
    with srv:
        assert srv.status()["pid"] != proc.pid
        assert srv.status()["reachable"]


def test_stale_pidfile_never_signals_a_stranger(tmp_path: Path) -> None:
    """A pid reused by an unrelated process is neither reported nor killed."""
    srv = LocalServer(tmp_path / "db", port=_free_port())
    srv.data_dir.mkdir()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        srv.pidfile.write_text(json.dumps({"pid": stranger.pid, "port": srv.port}))
        assert srv.status()["running"] is False
        assert srv.stop() is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
