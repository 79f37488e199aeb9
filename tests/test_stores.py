"""db/: URI handling, indexes, GridFS round trip, LaunchPad and JobStore on one server."""

from __future__ import annotations

import pytest

from flywheel.db.stores import CampaignDB, make_jobstore, make_launchpad
from flywheel.db.uri import (
    is_loopback_uri,
    redact_uri,
    resolve_uri,
    split_uri,
    uri_host,
    uri_port,
    with_database,
)


def test_uri_helpers():
    assert split_uri("mongodb://h:1/abc?authSource=admin")[1] == "abc"
    assert split_uri("mongodb://h:1")[1] == "flywheel"
    assert with_database("mongodb://u:p@h:1/x?tls=true", "y") == "mongodb://u:p@h:1/y?tls=true"
    assert redact_uri("mongodb://me:secret@h:1/x") == "mongodb://me:***@h:1/x"
    assert uri_port("mongodb://u:p@127.0.0.1:27118,h2:5/x") == 27118
    assert uri_port("mongodb://h/x") == 27017
    assert uri_port("mongodb://[::1]:4000/x") == 4000
    assert uri_host("mongodb://[::1]:4000/x") == "::1"  # the local server's host
    assert uri_host("mongodb://u:p@localhost:1,h2:5/x") == "localhost"
    assert is_loopback_uri("mongodb://127.0.0.1:27118/flywheel")
    assert is_loopback_uri("mongodb://u:p@localhost:1,[::1]:2/x")
    assert not is_loopback_uri("mongodb://127.0.0.1:1,db.example.org:2/x")
    assert not is_loopback_uri("mongodb+srv://localhost/x")


def test_which_uri_wins(monkeypatch):
    """--uri, then FLYWHEEL_DB_URI, then the campaign file, then the default."""
    from flywheel.settings import DEFAULT_URI, get_settings

    monkeypatch.delenv("FLYWHEEL_DB_URI", raising=False)
    get_settings.cache_clear()
    assert resolve_uri() == DEFAULT_URI == "mongodb://127.0.0.1:27118/flywheel"
    assert resolve_uri(None, "mongodb://camp/x") == "mongodb://camp/x"
    monkeypatch.setenv("FLYWHEEL_DB_URI", "mongodb://env/x")
    get_settings.cache_clear()
    try:
        assert resolve_uri(None, "mongodb://camp/x") == "mongodb://env/x"
        assert resolve_uri("mongodb://cli/x", "mongodb://camp/x") == "mongodb://cli/x"
    finally:
        monkeypatch.delenv("FLYWHEEL_DB_URI")
        get_settings.cache_clear()


def test_campaign_db_indexes_and_gridfs(db_uri):
    db = CampaignDB(db_uri, "c1")
    db.ensure_indexes()
    names = {ix["name"] for ix in db.materials.list_indexes()}
    assert "campaign_1_material_id_1" in names
    assert "campaign_1_chemsys_1_e_above_hull_1" in names
    db.materials.insert_one(db.q(material_id="m1"))
    from pymongo.errors import DuplicateKeyError

    with pytest.raises(DuplicateKeyError):
        db.materials.insert_one(db.q(material_id="m1"))
    payload = b"x" * 3_000_000  # larger than one GridFS chunk
    fid = db.put_file("models", "m.model", payload, round=0, member=1)
    assert db.get_file("models", fid) == payload
    assert [f["_id"] for f in db.find_files("models", round=0)] == [fid]
    assert db.find_files("models", round=1) == []
    assert CampaignDB(db_uri, "other").find_files("models", round=0) == []


def test_launchpad_and_jobstore_share_the_database(db_uri):
    from jobflow import job, run_locally

    lp = make_launchpad(db_uri)
    lp.reset("", require_password=False)
    assert lp.db.name == split_uri(db_uri)[1]

    @job
    def add(a, b):
        return a + b

    j = add(2, 3)
    store = make_jobstore(db_uri)
    responses = run_locally(j, store=store, ensure_success=True)
    assert responses[j.uuid][1].output == 5
    store.connect()
    assert store.query_one({"uuid": j.uuid})["output"] == 5
    assert "outputs" in lp.db.list_collection_names()
