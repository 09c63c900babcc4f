"""Asking the running stack: find the orchestrator, stream its progress, render the answer."""

from __future__ import annotations

from collections.abc import Callable

from a2a.helpers import get_data_parts
from a2a.types import StreamResponse, Task
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from agents.scaffold.peers import Peers
from protocol.payloads import Answer, AnswerRequest

#: Longest wait for the next event of an answer (rounds of writing on a busy CPU).
ANSWER_TIMEOUT_S = 600.0
Progress = Callable[[str, dict[str, object]], None]
Tokens = Callable[[str, str], None]


async def ask(
    request: AnswerRequest,
    peers: Peers,
    *,
    on_progress: Progress | None = None,
    on_tokens: Tokens | None = None,
) -> Answer:
    """Ask the orchestrator ``peers`` find; report progress and tokens as they arrive.

    Open ``peers`` once (``Peers.over_http(..., request_timeout_s=ANSWER_TIMEOUT_S)``) and
    ask many questions through them: one HTTP client, one A2A client per instance.
    """

    async def follow(event: StreamResponse, task: Task) -> None:
        if event.HasField("status_update") and on_progress is not None:
            message = event.status_update.status.message
            text = " ".join(p.text for p in message.parts if p.text)
            found: list[object] = list(get_data_parts(list(message.parts)))
            data = found[0] if found and isinstance(found[0], dict) else {}
            if text:
                on_progress(text, data)
        elif event.HasField("artifact_update") and on_tokens is not None:
            artifact = event.artifact_update.artifact
            text = "".join(p.text for p in artifact.parts if p.text)
            if text:
                on_tokens(artifact.artifact_id, text)

    return await peers.call("answer", request, result=Answer, on_update=follow)


def render(answer: Answer, console: Console) -> None:
    """The answer, its citations with sources, per-sentence marks, rounds and session."""
    console.print()
    console.print(Text(answer.text, style="bold"))
    console.print()
    if answer.sentences:
        marks = Table(title="sentences", show_lines=False, expand=False)
        for column in ("#", "verdict", "support", "cites", "sentence"):
            marks.add_column(column)
        for number, sentence in enumerate(answer.sentences, start=1):
            colour = "green" if sentence.verdict == "supported" else "red"
            cites = ", ".join(
                f"[{c.passage}]" + ("*" if c.origin == "attached" else "")
                for c in sentence.citations
            )
            marks.add_row(
                str(number),
                f"[{colour}]{sentence.verdict}[/]",
                f"{sentence.support:.2f}",
                cites or "-",
                sentence.text,
            )
        console.print(marks)
    cited = sorted({c.passage for s in answer.sentences for c in s.citations})
    if cited or answer.abstained:
        sources = Table(title="passages", expand=False)
        for column in ("n", "source", "snippet"):
            sources.add_column(column)
        shown = cited or list(range(1, min(3, len(answer.passages)) + 1))
        for number in shown:
            passage = answer.passages[number - 1]
            sources.add_row(f"[{number}]", passage.source, " ".join(passage.text.split())[:160])
        console.print(sources)
    notes = [
        f"verdict: {answer.verdict}",
        f"rounds: {answer.rounds}",
        f"session: {answer.session_id}",
    ]
    if answer.extractive:
        notes.append("extractive (quoted from the passages)")
    if answer.abstained:
        notes.append("abstained")
    timings = ", ".join(f"{k} {v / 1000:.2f}s" for k, v in answer.timings_ms.items())
    console.print(Group(Text(" · ".join(notes), style="dim"), Text(timings, style="dim")))
    if any(c.origin == "attached" for s in answer.sentences for c in s.citations):
        console.print(Text("* citation attached by grounding, not by the model", style="dim"))
