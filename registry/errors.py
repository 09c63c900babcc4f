"""Errors raised by the registry; every message says what to do about it, and each class
names the HTTP status the API answers it with."""

from __future__ import annotations

from typing import ClassVar


class RegistryError(Exception):
    """Base class of every registry error."""

    #: The HTTP status the API answers this error with.
    http_status: ClassVar[int] = 422


class InvalidCard(RegistryError):
    """The submitted agent card is malformed or incomplete."""

    http_status = 422

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"invalid agent card: {reason}. Fix the card and register again.")


class RegistrationRefused(RegistryError):
    """The card is valid but the registry will not accept the instance."""

    http_status = 403


class UntrustedCard(RegistrationRefused):
    """The card's signature is missing, by an unknown key, or does not verify (403).

    ``reason`` is one of :mod:`protocol.signing`'s: ``unsigned``, ``unknown_key``,
    ``card_changed``, ``bad_signature``, ``unreadable``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"card signature refused ({reason}): {detail}")


class SpoofedCard(RegistryError):
    """The card served by the agent differs from the one submitted."""

    http_status = 422


class AgentNotFound(RegistryError):
    """No instance is registered under the id."""

    http_status = 404

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        super().__init__(
            f"no agent instance {instance_id!r} is registered. "
            "List instances with GET /agents, or register the agent again."
        )


class SessionNotFound(RegistryError):
    """No session exists under the id (never created, or past its retention)."""

    http_status = 404

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"no session {session_id!r}: it was never negotiated or its retention has passed. "
            "Negotiate a new session."
        )


class SessionClosed(RegistryError):
    """The session was released or expired; it can no longer be changed."""

    http_status = 409

    def __init__(self, session_id: str, state: str) -> None:
        self.session_id = session_id
        self.state = state
        super().__init__(
            f"session {session_id!r} is {state}: it can no longer be changed. "
            "Negotiate a new session."
        )


class NoCapacity(RegistryError):
    """No healthy instance with free capacity offers a role's skill."""

    http_status = 409

    def __init__(self, role: str, skill: str) -> None:
        self.role = role
        self.skill = skill
        super().__init__(
            f"no healthy instance with free capacity offers skill {skill!r} "
            f"(role {role!r}); nothing was leased. Start or scale an agent offering "
            f"{skill!r}, release idle sessions, or retry later."
        )


class InvalidRequest(RegistryError):
    """A request the registry cannot act on (bad id, unknown role, ...)."""

    http_status = 422


class InstanceConflict(RegistryError):
    """The instance id belongs to another live instance (another card URL)."""

    http_status = 409

    def __init__(self, instance_id: str, bound_to: str, url: str) -> None:
        self.instance_id = instance_id
        self.bound_to = bound_to
        self.url = url
        super().__init__(
            f"instance id {instance_id!r} is held by the live instance at {bound_to}, not "
            f"{url}: nothing was changed. Register under another instance id "
            "(SCRIPTORIUM_INSTANCE_ID), or stop that instance; once it is offline "
            "(heartbeat_ttl_s) the id may be taken."
        )


class RecordUnreadable(RegistryError):
    """A stored record cannot be read back (written by something other than the registry)."""

    http_status = 500
