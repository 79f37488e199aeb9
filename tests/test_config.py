"""CampaignConfig: defaults, and errors that name the field."""

from __future__ import annotations

import pytest

from flywheel.config import (
    CampaignConfig,
    ConfigError,
    campaign_from_dict,
    load_campaign,
)

BASE = {"name": "t", "chemistry": {"elements": ["Li", "O"]}}


def test_defaults_are_complete():
    cfg = campaign_from_dict(BASE)
    assert cfg.filter.ensemble_size == 4
    assert cfg.oracle.backend == "chgnet"
    assert cfg.database.uri == "mongodb://127.0.0.1:27118/flywheel"
    assert cfg.hull.on_hull_tolerance == pytest.approx(5e-5)
    # round trip through JSON, as jobflow stores it
    assert CampaignConfig.model_validate_json(cfg.model_dump_json()) == cfg


def test_mistyped_field_is_named_with_suggestion():
    data = {**BASE, "filter": {"ensmble_size": 3}}
    with pytest.raises(ConfigError) as err:
        campaign_from_dict(data, source="c.yaml")
    msg = str(err.value)
    assert "c.yaml: unknown field 'filter.ensmble_size'" in msg
    assert "did you mean 'ensemble_size'" in msg


def test_unknown_element_is_named():
    with pytest.raises(ConfigError, match=r"chemistry.elements.*Xx"):
        campaign_from_dict({"name": "t", "chemistry": {"elements": ["Li", "Xx"]}})


def test_bad_values_and_missing_fields():
    with pytest.raises(ConfigError, match=r"missing required field 'chemistry'"):
        campaign_from_dict({"name": "t"})
    with pytest.raises(ConfigError, match=r"field 'filter.ensemble_size'"):
        campaign_from_dict({**BASE, "filter": {"ensemble_size": 1}})
    with pytest.raises(ConfigError, match=r"field 'database.uri'"):
        campaign_from_dict({**BASE, "database": {"uri": "http://x"}})


def test_missing_seed_file_fails_on_load(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: t\nchemistry: {elements: [Li, O]}\nseeds: {files: [nope.cif]}\n")
    with pytest.raises(ConfigError, match=r"seeds.files.*nope.cif"):
        load_campaign(f)


def test_seed_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "s.cif").write_text("x")
    f = tmp_path / "c.yaml"
    f.write_text("name: t\nchemistry: {elements: [Li, O]}\nseeds: {files: [s.cif]}\n")
    assert load_campaign(f).seeds.files == [tmp_path / "s.cif"]


def test_invalid_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_campaign(f)


def test_bad_machine_setting_is_one_message_naming_it(tmp_path, monkeypatch):
    from flywheel.settings import SettingsError, get_settings

    conf = tmp_path / "flywheel.yaml"
    conf.write_text("local_port: 27999\nnum_threads: 2\n")
    monkeypatch.setenv("FLYWHEEL_CONFIG_FILE", str(conf))
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match=r"(?i)local_port: unknown setting .*removed"):
            get_settings()
        # the CLI prints it as one line, no traceback
        from flywheel.launchers.cli import main as cli

        assert cli(["query", "--campaign", "x"]) == 1
        conf.write_text("num_threads: 2\n")
        get_settings.cache_clear()
        assert get_settings().NUM_THREADS == 2
    finally:
        monkeypatch.delenv("FLYWHEEL_CONFIG_FILE")
        get_settings.cache_clear()
