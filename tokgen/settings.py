"""Process-wide settings, read from the environment (prefix ``TOKGEN_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokgen.errors import TokgenError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKGEN_")

    # Where derived data is cached (e.g. the held-out renders `codec eval` makes).
    cache_dir: Path = Path.home() / ".cache" / "tokgen"
    # Token generation engine when none is named: auto = vllm where importable, else hf.
    engine_backend: Literal["auto", "vllm", "hf"] = "auto"


def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"TOKGEN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise TokgenError(f"bad setting: {problems}") from None
