"""Settings of an agent process (prefix ``SCRIPTORIUM_``)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from pydantic import Field, field_validator

from protocol.signing import CardSigningSettings

_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class AgentSettings(CardSigningSettings):
    """What every agent process reads from the environment (card signing key included)."""

    instance_id: str | None = Field(
        default=None, description="Registry id of this instance (default: name@host-port)."
    )
    capacity: int | None = Field(
        default=None, ge=1, description="Concurrent sessions this instance accepts."
    )
    task_retention_s: float = Field(
        default=24 * 3600,
        gt=0,
        description=(
            "How long a task, its events and push configs are kept after its last write; "
            "the task index forgets older entries."
        ),
    )
    task_store_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description=(
            "Longest a request waits for the task store (Redis) before answering "
            "TASK_STORE_UNAVAILABLE (retry later)."
        ),
    )
    max_json_depth: int = Field(
        default=32,
        ge=8,
        le=36,
        description=(
            "Deepest nesting of an A2A request body (checked before parsing). At most 36: "
            "protobuf refuses data nested deeper (a Struct 33 objects deep)."
        ),
    )
    max_message_parts: int = Field(default=32, ge=1, le=1000, description="Parts per message.")
    max_in_flight_tasks: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Tasks this instance runs at once; more SendMessage requests are answered "
            "AGENT_BUSY (default: the card's capacity)."
        ),
    )
    busy_retry_after_s: float = Field(
        default=2.0, gt=0, le=600, description="Retry hint of a busy answer."
    )
    task_write_coalesce_s: float = Field(
        default=0.25,
        ge=0,
        le=5,
        description=(
            "How long a running task's intermediate updates may wait to be written to Redis "
            "together (final states never wait); 0 writes as soon as possible, updates that "
            "arrive during one write going into the next."
        ),
    )
    graceful_shutdown_s: float = Field(
        default=30.0, ge=0, description="How long in-flight tasks may take to finish on stop."
    )
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65_535,
        description="A separate port for the agent's gRPC interface (default: the HTTP port).",
    )
    model_cache_dir: Path | None = Field(
        default=None, description="Prepared models (default: ~/.cache/scriptorium/models)."
    )
    # Push notifications (agents/scaffold/push/, docs/a2a.md#push-notifications).
    push_allow_private: bool = Field(
        default=False,
        description="Let webhooks be on loopback and private addresses (link-local still "
        "needs push_allowed_hosts).",
    )
    push_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Webhook host names and networks (CIDR) allowed whatever they resolve to.",
    )
    push_max_configs_per_task: int = Field(
        default=10, ge=1, le=100, description="Push notification configs one task may hold."
    )
    push_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Longest one delivery attempt may take."
    )
    push_max_attempts: int = Field(
        default=8, ge=1, le=50, description="Delivery attempts of one update to one webhook."
    )
    push_backoff_s: float = Field(
        default=0.5, gt=0, le=60, description="Wait before the first retry; doubles, with jitter."
    )
    push_backoff_max_s: float = Field(
        default=60.0, gt=0, le=3600, description="Longest wait between two attempts."
    )
    push_give_up_s: float = Field(
        default=300.0, gt=0, le=86_400, description="No attempt of an update starts after this."
    )
    push_max_queued: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Updates waiting per task and webhook; beyond it the oldest are dropped.",
    )
    push_drain_s: float = Field(
        default=10.0, ge=0, le=600, description="How long shutdown waits for queued deliveries."
    )

    @field_validator("push_allowed_hosts")
    @classmethod
    def _push_hosts(cls, value: list[str]) -> list[str]:
        """Each entry is a network (CIDR or address) or a host name; names are lower-cased."""
        hosts = []
        for entry in (item.strip() for item in value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                labels = entry.rstrip(".").split(".")
                if len(entry) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
                    raise ValueError(f"{entry!r} is neither a network nor a host name") from None
                entry = entry.lower().rstrip(".")
            hosts.append(entry)
        return hosts

    @property
    def resolved_model_cache_dir(self) -> Path:
        """Where prepared models live."""
        return self.model_cache_dir or default_cache_dir() / "models"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scriptorium`` (``~/.cache/scriptorium``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scriptorium"
