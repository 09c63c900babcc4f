"""What the registry accepts: the id alphabets and every numeric bound, in one place.

The HTTP schema (``registry.routes``), the Python API and the Lua scripts (``registry.lua``)
all check against these, so a value one of them accepts is never refused by another, and a
caller that skips the Python layer (an agent running the scripts itself) cannot store what
the API would refuse. See "Limits" in ``docs/registry.md``.
"""

from __future__ import annotations

import math
import re

from registry.errors import InvalidRequest

#: Agent (card) names and session role names: lowercase letters, digits, ``.``, ``_``, ``-``;
#: a letter or digit first; at most 64 characters. No ``:`` (the key separator), ``/``,
#: ``*``, ``@``, spaces or markup.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: Instance ids: the name alphabet plus ``@`` (the default id is ``name@host-port``), at most
#: 128 characters.
INSTANCE_ID_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,127}$"
#: Session ids: letters (either case), digits, ``_``, ``.``, ``-``; a letter or digit first;
#: at most 128 characters (the default is 32 hex digits).
SESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
#: Stream ids (``after``, ``Last-Event-ID``): ``ms`` or ``ms-seq``, each at most 19 digits,
#: so every id the pattern admits is one Redis accepts (its parts are 64-bit).
STREAM_ID_PATTERN = r"^[0-9]{1,19}(-[0-9]{1,19})?$"
#: The same as a query or header parameter, where an empty value means "not given".
STREAM_ID_PARAM_PATTERN = r"^([0-9]{1,19}(-[0-9]{1,19})?)?$"

_NAME = re.compile(NAME_PATTERN)
_INSTANCE_ID = re.compile(INSTANCE_ID_PATTERN)
_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_STREAM_ID = re.compile(STREAM_ID_PATTERN)
_UNSAFE = re.compile(r"[^a-z0-9.-]")

NAME_RULE = "1-64 characters from a-z 0-9 . _ -, starting with a letter or digit"
INSTANCE_ID_RULE = "1-128 characters from a-z 0-9 . _ - @, starting with a letter or digit"
SESSION_ID_RULE = "1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"

#: Hard ceiling of a session lease, whatever ``max_session_lease_s`` says (30 days).
LEASE_CEILING_S = 30 * 24 * 3600
LEASE_CEILING_MS = LEASE_CEILING_S * 1000
#: Most sessions one instance may declare it accepts (the card's capacity extension).
MAX_CAPACITY = 1_000_000
#: Highest in-flight task count a heartbeat may report.
MAX_LOAD = 1_000_000
#: Most roles one session may lease.
MAX_ROLES = 16
#: Longest skill id or tag a query or a negotiation may name.
MAX_SKILL_LENGTH = 256
#: Most entries one read (``count``, ``limit``) may ask for.
MAX_PAGE = 10_000


def is_name(value: str) -> bool:
    """Whether ``value`` is a usable agent or role name."""
    return bool(_NAME.fullmatch(value))


def is_instance_id(value: str) -> bool:
    """Whether ``value`` is a usable instance id."""
    return bool(_INSTANCE_ID.fullmatch(value))


def is_session_id(value: str) -> bool:
    """Whether ``value`` is a usable session id."""
    return bool(_SESSION_ID.fullmatch(value))


def is_stream_id(value: str) -> bool:
    """Whether ``value`` is a stream id the registry accepts (``ms`` or ``ms-seq``)."""
    return bool(_STREAM_ID.fullmatch(value))


def default_instance_id(name: str, host: str, port: int) -> str:
    """``name@host-port``, the host lowercased and every character outside the alphabet
    (an IPv6 address's ``:``) turned into ``-``."""
    return f"{name}@{_UNSAFE.sub('-', host.lower())}-{port}"


def finite_in(value: float, low: float, high: float) -> bool:
    """Whether ``value`` is a finite number in ``[low, high]``."""
    return isinstance(value, int | float) and math.isfinite(value) and low <= value <= high


def check_stream_id(stream_id: str) -> None:
    """Raise :class:`InvalidRequest` unless ``stream_id`` is an id to resume after."""
    if not is_stream_id(stream_id):
        raise InvalidRequest(
            f"{stream_id!r} is not a stream id: pass the `id` of the last event you received "
            "(ms or ms-seq, digits only)"
        )


def check_count(count: int) -> None:
    """Raise :class:`InvalidRequest` unless ``count`` (entries one read returns) is in
    1..``MAX_PAGE``."""
    if not 1 <= count <= MAX_PAGE:
        raise InvalidRequest(f"count must be in 1..{MAX_PAGE} (got {count})")
