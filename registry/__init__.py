"""Scriptorium's agent registry and session broker, backed by Redis/Valkey.

See ``docs/registry.md``.
"""

from registry.directory import Registry
from registry.errors import (
    AgentNotFound,
    InstanceConflict,
    InvalidCard,
    InvalidRequest,
    NoCapacity,
    RecordUnreadable,
    RegistrationRefused,
    RegistryError,
    SessionClosed,
    SessionNotFound,
    SpoofedCard,
)
from registry.events import SessionEvent, SessionLog
from registry.keys import RedisKeys
from registry.records import AgentRecord, AgentState, Change, ChangeKind, SweepReport
from registry.sessions import Session, SessionBroker, SessionState
from registry.settings import RegistrySettings

__all__ = [
    "AgentNotFound",
    "AgentRecord",
    "AgentState",
    "Change",
    "ChangeKind",
    "InstanceConflict",
    "InvalidCard",
    "InvalidRequest",
    "NoCapacity",
    "RecordUnreadable",
    "RedisKeys",
    "RegistrationRefused",
    "Registry",
    "RegistryError",
    "RegistrySettings",
    "Session",
    "SessionBroker",
    "SessionClosed",
    "SessionEvent",
    "SessionLog",
    "SessionNotFound",
    "SessionState",
    "SpoofedCard",
    "SweepReport",
]
