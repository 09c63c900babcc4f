"""Settings of an agent process (prefix ``SCRIPTORIUM_``)."""

from __future__ import annotations

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
