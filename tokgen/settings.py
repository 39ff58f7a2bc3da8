"""Process-wide settings, read from the environment (prefix ``TOKGEN_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKGEN_")

    # Where derived data is cached (e.g. the held-out renders `codec eval` makes).
    cache_dir: Path = Path.home() / ".cache" / "tokgen"


def get_settings() -> Settings:
    return Settings()
