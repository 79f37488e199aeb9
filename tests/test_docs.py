"""Docs that are generated from code stay identical to the code."""

from __future__ import annotations

from pathlib import Path

from flywheel.config import reference_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_reference_is_current():
    text = (DOCS / "configuration.md").read_text()
    assert reference_markdown() in text, (
        "docs/configuration.md is stale: regenerate the field tables with "
        "flywheel.config.reference_markdown()"
    )


def test_every_settings_field_is_documented():
    from flywheel.settings import FlywheelSettings

    text = (DOCS / "configuration.md").read_text()
    for name in FlywheelSettings.model_fields:
        assert f"FLYWHEEL_{name}" in text, name
