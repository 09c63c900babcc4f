"""Settings of an agent process (prefix ``SCRIPTORIUM_``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from protocol.settings import CommonSettings


class AgentSettings(CommonSettings):
    """What every agent process reads from the environment."""

    instance_id: str | None = Field(
        default=None, description="Registry id of this instance (default: name@host:port)."
    )
    capacity: int | None = Field(
        default=None, ge=1, description="Concurrent sessions this instance accepts."
    )
    task_retention_s: float = Field(default=7 * 24 * 3600, gt=0)
    graceful_shutdown_s: float = Field(
        default=30.0, ge=0, description="How long in-flight tasks may take to finish on stop."
    )
    model_cache_dir: Path | None = Field(
        default=None, description="Prepared models (default: ~/.cache/scriptorium/models)."
    )

    @property
    def resolved_model_cache_dir(self) -> Path:
        """Where prepared models live."""
        return self.model_cache_dir or default_cache_dir() / "models"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scriptorium`` (``~/.cache/scriptorium``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scriptorium"
