"""Shared fixtures: a real local SecantusDB server per test session, torch hygiene."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _torch_dtype():
    """MACE changes torch's global default dtype: restore it after every test."""
    import torch

    torch.set_num_threads(1)
    dtype = torch.get_default_dtype()
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def local_server(tmp_path_factory):
    """A real SecantusDB server (child process on 127.0.0.1) for the whole session."""
    from flywheel.db.server import LocalServer

    srv = LocalServer(data_dir=tmp_path_factory.mktemp("secantus"), port=free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def db_uri(local_server) -> str:
    """A fresh database on the session's server."""
    return f"{local_server.uri}/t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA
