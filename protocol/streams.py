"""The resume-cursor A2A extension: task events numbered so a client can resume exactly.

Every status and artifact update a Scriptorium agent streams carries its per-task sequence
number in its metadata (``{"https://scriptorium.dev/a2a/extensions/resume/v1": {"seq": 7}}``).
A client that lost its stream calls SubscribeToTask with the extension activated
(``A2A-Extensions: <uri>``) and the last sequence it saw in the ``A2A-Resume-After`` header
(gRPC: metadata ``a2a-resume-after``): it gets exactly the events after that one — no Task
snapshot first, nothing lost, nothing repeated — and the stream ends after the final event,
even when the task has already finished. Without the extension SubscribeToTask behaves as the
specification says: the full Task first, then every later event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from a2a.types import AgentExtension, StreamResponse, TaskState, TaskStatusUpdateEvent
from google.protobuf.struct_pb2 import Struct

RESUME_EXTENSION = "https://scriptorium.dev/a2a/extensions/resume/v1"
RESUME_AFTER_HEADER = "A2A-Resume-After"
EXTENSIONS_HEADER = "A2A-Extensions"
TERMINAL_STATES = frozenset(
    {
        TaskState.TASK_STATE_COMPLETED,
        TaskState.TASK_STATE_FAILED,
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_REJECTED,
    }
)
#: States after which a task's stream ends: terminal ones, and those waiting for the client.
SETTLED_STATES = TERMINAL_STATES | {
    TaskState.TASK_STATE_INPUT_REQUIRED,
    TaskState.TASK_STATE_AUTH_REQUIRED,
}


#: The reason a task fails with when the agent instance running it died (see
#: ``agents/scaffold/tasks/store.py``): the request may be sent again, to another instance.
ORPHANED = (
    "the agent instance running this task stopped before finishing it; send the request again"
)


def resume_extension() -> AgentExtension:
    """How the extension is declared in a card's ``capabilities.extensions``."""
    params = Struct()
    params.update({"header": RESUME_AFTER_HEADER, "metadata_key": RESUME_EXTENSION})
    return AgentExtension(
        uri=RESUME_EXTENSION,
        description=(
            "Task events carry a per-task sequence in metadata; SubscribeToTask with "
            f"{RESUME_AFTER_HEADER}: <seq> sends exactly the events after it, then ends "
            "after the final event."
        ),
        required=False,
        params=params,
    )


def stamp(metadata: Struct, seq: int) -> None:
    """Record ``seq`` in an event's metadata."""
    metadata.update({RESUME_EXTENSION: {"seq": seq}})


def sequence_of(metadata: Struct) -> int | None:
    """The sequence an event's metadata carries, or None."""
    if RESUME_EXTENSION not in metadata.fields:
        return None
    entry = metadata.fields[RESUME_EXTENSION].struct_value.fields.get("seq")
    return int(entry.number_value) if entry is not None else None


def event_sequence(event: StreamResponse) -> int | None:
    """The sequence of one streamed event (status and artifact updates carry one)."""
    kind = event.WhichOneof("payload")
    if kind == "status_update":
        return sequence_of(event.status_update.metadata)
    if kind == "artifact_update":
        return sequence_of(event.artifact_update.metadata)
    if kind == "task":
        return sequence_of(event.task.metadata)
    return None


def resume_parameters(after: int) -> dict[str, str]:
    """Service parameters (HTTP headers / gRPC metadata) for a resumed SubscribeToTask."""
    return {EXTENSIONS_HEADER: RESUME_EXTENSION, RESUME_AFTER_HEADER: str(after)}


def requested_cursor(extensions: set[str], headers: Mapping[str, Any]) -> int | None:
    """The cursor a request asks to resume after, when it activates the extension."""
    if RESUME_EXTENSION not in extensions:
        return None
    wanted = RESUME_AFTER_HEADER.lower()
    for name, value in headers.items():
        if name.lower() == wanted:
            text = value.decode() if isinstance(value, bytes) else str(value)
            try:
                cursor = int(text.strip())
            except ValueError:
                message = f"{RESUME_AFTER_HEADER} must be an integer, got {text!r}"
                raise ValueError(message) from None
            if cursor < 0:
                raise ValueError(f"{RESUME_AFTER_HEADER} must be >= 0, got {cursor}")
            return cursor
    return None


def is_final(event: StreamResponse | TaskStatusUpdateEvent) -> bool:
    """Whether nothing follows this event in its task's stream (final or interrupted)."""
    if isinstance(event, TaskStatusUpdateEvent):
        return event.status.state in SETTLED_STATES
    kind = event.WhichOneof("payload")
    if kind == "message":
        return True
    if kind == "task":
        return event.task.status.state in SETTLED_STATES
    if kind == "status_update":
        return event.status_update.status.state in SETTLED_STATES
    return False
