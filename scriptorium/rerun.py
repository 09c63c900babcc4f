"""Re-running a recorded session on the live agents, whole or forked, and saying what changed.

``--rerun`` sends the recorded question again; ``--from-step N`` forks: the results the
recording holds before step N (passages, drafts, critiques) go along with the question and
the orchestrator uses them instead of asking the agents, so only what follows runs live.
Either way the two recordings are compared exchange by exchange (requests to the agents and
what they returned, timings ignored): the first one that differs is named, and the answers
are compared by text, citations and verdicts.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agents.scaffold.peers import Peers
from protocol.payloads import RECORD_ANNOTATIONS, AnswerRequest, RecordedResult
from registry.client import RegistryClient
from registry.events import SessionEvent
from scriptorium.ask import ask
from scriptorium.replay import Recording, describe, read_recording

#: The steps an answer is made of: the question, each agent's request and result, the answer.
_EXCHANGE = re.compile(r"(answer|search|write|critique)\.(request|result|failed|unreachable)")
#: What changes from run to run without the answer changing: timings, ids, replay marks.
_VOLATILE = RECORD_ANNOTATIONS | {"engine_ms", "timings_ms", "session_id"}
_FORKABLE = {"search.result": "search", "write.result": "write", "critique.result": "critique"}


class Divergence(BaseModel):
    """The first exchange where the two runs differ."""

    recorded_step: int | None = Field(description="Its seq in the recording (None: absent).")
    rerun_step: int | None = Field(description="Its seq in the rerun (None: absent).")
    recorded_kind: str | None
    rerun_kind: str | None
    fields: list[str] = Field(description="Top-level payload fields that differ.")
    recorded: str
    rerun: str


class Change(BaseModel):
    """One difference between the two answers."""

    what: str
    recorded: str
    rerun: str


class RunDiff(BaseModel):
    """What a rerun changed, against the recording it came from."""

    recorded_session: str | None
    rerun_session: str
    from_step: int | None = Field(description="Forked at this step (None: a whole rerun).")
    reused_steps: list[int] = Field(description="Recorded results the fork reused.")
    same: bool
    first_divergence: Divergence | None
    answer_changes: list[Change]
    text_diff: list[str] = Field(description="A unified diff of the answers' text.")


def rerun_request(recording: Recording, from_step: int | None = None) -> AnswerRequest:
    """The recorded question, with the recorded results before ``from_step`` for a fork."""
    asked = next((e for e in recording.events if e.kind == "answer.request"), None)
    if asked is None or not asked.payload or asked.truncated:
        raise ValueError("the recording holds no question (no answer.request step) to ask again")
    question = {k: v for k, v in asked.payload.items() if k in AnswerRequest.model_fields}
    request = AnswerRequest.model_validate(question)
    if from_step is None:
        return request
    last = recording.events[-1].seq if recording.events else 0
    if not asked.seq < from_step <= last:
        raise ValueError(
            f"--from-step takes a step after the question (step {asked.seq}) and at most "
            f"{last}; `scriptorium replay ID` numbers the steps"
        )
    recorded = [
        _recorded(event)
        for event in recording.events
        if event.seq < from_step and event.kind in _FORKABLE
    ]
    return request.model_copy(update={"recorded": recorded})


async def rerun(
    recording: Recording,
    peers: Peers,
    *,
    from_step: int | None = None,
    on_progress: Callable[[str, dict[str, object]], None] | None = None,
) -> tuple[Recording, RunDiff]:
    """Ask the live agents again (forked at ``from_step``); the new recording and the diff."""
    request = rerun_request(recording, from_step)
    answer = await ask(request, peers, on_progress=on_progress)
    directory = peers.directory
    if not isinstance(directory, RegistryClient):
        raise TypeError("rerun reads the new session through the registry's HTTP API")
    found = await read_recording(directory, answer.session_id)
    if found is None:
        raise ValueError(f"the rerun's session {answer.session_id} is not in the registry")
    return found, compare(recording, found, from_step=from_step)


def compare(recorded: Recording, rerun: Recording, *, from_step: int | None = None) -> RunDiff:
    """Exchange by exchange, then answer by answer: what differs between two runs."""
    before, after = _exchanges(recorded.events), _exchanges(rerun.events)
    divergence: Divergence | None = None
    for index in range(max(len(before), len(after))):
        old = before[index] if index < len(before) else None
        new = after[index] if index < len(after) else None
        fields = _differing(old, new)
        if fields:
            divergence = Divergence(
                recorded_step=old.seq if old else None,
                rerun_step=new.seq if new else None,
                recorded_kind=old.kind if old else None,
                rerun_kind=new.kind if new else None,
                fields=fields,
                recorded=describe(old) if old else "(nothing)",
                rerun=describe(new) if new else "(nothing)",
            )
            break
    old_answer, new_answer = _answer(recorded.events), _answer(rerun.events)
    changes = _answer_changes(old_answer, new_answer)
    text_diff = list(
        difflib.unified_diff(
            str(old_answer.get("text", "")).splitlines(),
            str(new_answer.get("text", "")).splitlines(),
            "recorded",
            "rerun",
            lineterm="",
        )
    )
    reused = [
        int(e.payload["replayed"])
        for e in rerun.events
        if e.kind in _FORKABLE and e.payload and isinstance(e.payload.get("replayed"), int)
    ]
    return RunDiff(
        recorded_session=recorded.session.id if recorded.session else None,
        rerun_session=rerun.session.id if rerun.session else "",
        from_step=from_step,
        reused_steps=reused,
        same=divergence is None and not changes,
        first_divergence=divergence,
        answer_changes=changes,
        text_diff=text_diff,
    )


def diff_view(diff: RunDiff) -> Group:
    """The diff for a terminal: the first divergence, the answer's changes, the text diff."""
    lines: list[Any] = []
    origin = f"forked at step {diff.from_step}" if diff.from_step else "rerun"
    reused = f", reused steps {diff.reused_steps}" if diff.reused_steps else ""
    head = f"{origin}: session {diff.rerun_session} against {diff.recorded_session}{reused}"
    lines.append(Text(head, style="bold"))
    if diff.same:
        lines.append(Text("same answer, same citations and verdicts, step for step", "green"))
        return Group(*lines)
    where = diff.first_divergence
    if where is not None:
        lines.append(
            Text(
                f"first divergence: step {where.recorded_step} ({where.recorded_kind}) in the "
                f"recording, step {where.rerun_step} ({where.rerun_kind}) in the rerun; "
                f"differs in {', '.join(where.fields)}",
                style="yellow",
            )
        )
    if diff.answer_changes:
        table = Table(title="answer changes", expand=False)
        for column in ("what", "recorded", "rerun"):
            table.add_column(column, overflow="fold")
        for change in diff.answer_changes:
            table.add_row(escape(change.what), escape(change.recorded), escape(change.rerun))
        lines.append(table)
    if diff.text_diff:
        lines.append(Text("\n".join(diff.text_diff)))
    return Group(*lines)


def _recorded(event: SessionEvent) -> RecordedResult:
    payload = event.payload or {}
    if event.truncated and not (event.kind == "search.result" and "passages" in payload):
        raise ValueError(
            f"step {event.seq} ({event.kind}) was too large to record whole "
            "(SCRIPTORIUM_MAX_EVENT_PAYLOAD_BYTES); fork from this step or an earlier one"
        )
    kept = {k: v for k, v in payload.items() if k not in {"sha256", "bytes"}}
    return RecordedResult(skill=_FORKABLE[event.kind], result=kept, step=event.seq)  # type: ignore[arg-type]


def _exchanges(events: list[SessionEvent]) -> list[SessionEvent]:
    return [e for e in events if _EXCHANGE.fullmatch(e.kind)]


def _differing(old: SessionEvent | None, new: SessionEvent | None) -> list[str]:
    if old is None or new is None:
        return ["step"]
    if old.kind != new.kind:
        return ["kind"]
    before, after = _stable(old.payload or {}), _stable(new.payload or {})
    assert isinstance(before, dict)
    assert isinstance(after, dict)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _stable(value: Any) -> Any:
    """The value without run-to-run noise: volatile keys dropped, floats rounded."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


def _answer(events: list[SessionEvent]) -> dict[str, Any]:
    found = next((e for e in events if e.kind == "answer.result" and e.payload), None)
    return dict(found.payload or {}) if found else {}


def _answer_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    for key in ("text", "verdict", "rounds", "extractive", "abstained"):
        if old.get(key) != new.get(key):
            changes.append(
                Change(what=key, recorded=_short(old.get(key)), rerun=_short(new.get(key)))
            )
    old_sentences, new_sentences = _sentences(old), _sentences(new)
    for index in range(max(len(old_sentences), len(new_sentences))):
        before = old_sentences[index] if index < len(old_sentences) else {}
        after = new_sentences[index] if index < len(new_sentences) else {}
        for key, label in (("cites", "citations"), ("verdict", "verdict")):
            if before.get(key) != after.get(key):
                changes.append(
                    Change(
                        what=f"sentence {index + 1} {label}",
                        recorded=_short(before.get(key)),
                        rerun=_short(after.get(key)),
                    )
                )
    return changes


def _sentences(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Each sentence's citations (as the chunks cited, not their numbers) and verdict."""
    sentences = answer.get("sentences")
    if not isinstance(sentences, list):
        return []
    return [
        {
            "cites": ", ".join(
                f"[{c.get('passage')}] {c.get('source')}#{c.get('chunk_id')}"
                for c in s.get("citations") or []
                if isinstance(c, dict)
            ),
            "verdict": s.get("verdict"),
        }
        for s in sentences
        if isinstance(s, dict)
    ]


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 200 else text[:197] + "..."
