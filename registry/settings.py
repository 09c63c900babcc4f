"""Settings of the registry and session broker (environment prefix ``SCRIPTORIUM_``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from protocol.signing import CardTrustSettings
from registry.limits import LEASE_CEILING_S


class RegistrySettings(CardTrustSettings):
    """What the registry needs on top of :class:`~protocol.settings.CommonSettings`.

    Heartbeat timing (``heartbeat_interval_s``, ``heartbeat_ttl_s``), ``allowed_networks``
    and ``token`` come from the common settings; trusted card keys and
    ``require_signed_cards`` from :class:`~protocol.signing.CardTrustSettings`.
    """

    sweep_interval_s: float = Field(
        default=1.0, gt=0, description="How often the API process sweeps agent states."
    )
    offline_retention_s: float = Field(
        default=3600.0, ge=0, description="How long an offline agent is kept before deletion."
    )
    session_lease_s: float = Field(
        default=300.0, gt=0, description="Default session lease; renew before it runs out."
    )
    max_session_lease_s: float = Field(
        default=3600.0,
        gt=0,
        le=LEASE_CEILING_S,
        description="Longest lease a negotiation or renewal may ask for (at most 30 days).",
    )
    session_retention_s: float = Field(
        default=86_400.0, gt=0, description="How long a closed session and its log are kept."
    )
    changes_maxlen: int = Field(default=10_000, ge=1, description="Approximate feed length.")
    events_maxlen: int = Field(
        default=10_000, ge=1, description="Approximate length of one session's event log."
    )
    max_event_payload_bytes: int = Field(
        default=65_536, ge=256, description="Larger event payloads are stored truncated."
    )
    card_fetch_timeout_s: float = Field(
        default=5.0, gt=0, description="Total time allowed to fetch a card being verified."
    )
    max_streams: int = Field(
        default=256, ge=1, description="Event streams (SSE) the API serves at once, in all."
    )
    max_streams_per_client: int = Field(
        default=16, ge=1, description="Event streams one client address may hold open at once."
    )
    stream_retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After of a stream refused for the caps above."
    )

    @model_validator(mode="after")
    def _lease_within_max(self) -> RegistrySettings:
        if self.session_lease_s > self.max_session_lease_s:
            raise ValueError(
                f"session_lease_s ({self.session_lease_s}) exceeds max_session_lease_s "
                f"({self.max_session_lease_s}); lower the one or raise the other"
            )
        return self

    @property
    def healthy_window_s(self) -> float:
        """Heartbeat age below which an instance counts as healthy."""
        return min(2 * self.heartbeat_interval_s, self.heartbeat_ttl_s)

    @property
    def healthy_window_ms(self) -> int:
        return int(self.healthy_window_s * 1000)

    @property
    def heartbeat_ttl_ms(self) -> int:
        return int(self.heartbeat_ttl_s * 1000)
