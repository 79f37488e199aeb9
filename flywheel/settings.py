"""Machine-level settings for flywheel, read lazily.

Values come, in increasing priority, from defaults, ``~/.flywheel.yaml`` (or the file
named by ``FLYWHEEL_CONFIG_FILE``) and ``FLYWHEEL_*`` environment variables.  Campaign
science lives in :class:`flywheel.config.CampaignConfig`; this object only holds what
depends on the machine (where the database is, how many threads, which device).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_CONFIG_FILE = "~/.flywheel.yaml"
#: The database every command uses when nothing names another: the local SecantusDB
#: server, which ``flywheel run`` starts for a loopback URI (rule:
#: :mod:`flywheel.db.uri`).
DEFAULT_URI = "mongodb://127.0.0.1:27118/flywheel"


class SettingsError(ValueError):
    """A machine setting is unknown or invalid (the message names it)."""


class _YamlSource(PydanticBaseSettingsSource):
    """Read settings from the flywheel YAML file if it exists."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        import yaml

        path = Path(os.environ.get("FLYWHEEL_CONFIG_FILE", DEFAULT_CONFIG_FILE)).expanduser()
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of settings")
        # the fields are upper case (FLYWHEEL_NUM_THREADS); the file's keys any case
        return {str(k).upper(): v for k, v in data.items()}


class FlywheelSettings(BaseSettings):
    """Settings of the machine flywheel runs on."""

    DB_URI: str | None = Field(
        None,
        description="MongoDB URI that overrides the campaign's database.uri "
        "(e.g. a production MongoDB with authentication).",
    )
    SECANTUS_EXECUTABLE: str = Field(
        "secantusd-py", description="Executable of the local MongoDB-wire server."
    )
    NUM_THREADS: int = Field(
        1,
        description="torch / OpenMP threads per worker process. On small machines "
        "more than one thread per process is slower when another worker holds a core.",
    )
    DEVICE: str = Field(
        "auto", description="torch device for ML stages: 'auto', 'cpu' or 'cuda'."
    )
    WORKER_SLEEP: int = Field(
        1, ge=1, description="Seconds a local worker sleeps when no job is ready."
    )

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_", extra="forbid", case_sensitive=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    def resolved_device(self) -> str:
        """Return ``cuda`` when asked for ``auto`` and a GPU is visible, else ``cpu``."""
        if self.DEVICE != "auto":
            return self.DEVICE
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def get_settings() -> FlywheelSettings:
    """Return the (cached) settings; call ``get_settings.cache_clear()`` after changes.

    Raises :class:`SettingsError` naming the offending setting (an unknown or invalid
    ``FLYWHEEL_*`` variable or ``~/.flywheel.yaml`` key).
    """
    from pydantic import ValidationError

    try:
        return FlywheelSettings()
    except ValidationError as err:
        where = os.environ.get("FLYWHEEL_CONFIG_FILE", DEFAULT_CONFIG_FILE)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '?'}: "
            + ("unknown setting (FLYWHEEL_LOCAL_PORT was removed: the local server's "
               "port is the database URI's)" if e["loc"] and str(e["loc"][0]).lower()
               == "local_port" else e["msg"])
            for e in err.errors())
        raise SettingsError(f"machine settings (FLYWHEEL_* variables, {where}): "
                          f"{problems}") from None
