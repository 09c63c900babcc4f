"""How a long command shows its progress on stderr: steps under a spinner, or an answer's
progress lines with its tokens drawn as they are written."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from rich.live import Live
from rich.markup import escape
from rich.text import Text

from scriptorium.terminal import console

if TYPE_CHECKING:
    from scriptorium.ask import Progress, Tokens


@contextlib.contextmanager
def steps(doing: str, label: str) -> Iterator[Callable[[str], None]]:
    """A spinner saying ``doing``; yields ``step(text)``, which prints the step and shows it
    beside the spinner as ``label: text ...``."""
    with console.status(doing) as status:

        def step(text: str) -> None:
            status.update(f"{label}: {text} ...")
            console.print(f"  {text}")

        yield step


@contextlib.contextmanager
def answer_progress(*, stream: bool, quiet: bool) -> Iterator[tuple[Progress, Tokens]]:
    """Yields ``(on_progress, on_tokens)`` for :func:`scriptorium.ask.ask`: progress lines,
    and with ``stream`` the answer drawn live as it is written; nothing at all when ``quiet``."""
    drafts: dict[str, str] = {}
    live = Live(console=console, transient=True) if stream and not quiet else None

    def progress(text: str, data: dict[str, object]) -> None:
        if not quiet:
            console.print(f"[dim]{escape(text)}[/]")

    def tokens(artifact_id: str, text: str) -> None:
        drafts[artifact_id] = drafts.get(artifact_id, "") + text
        if live is not None:
            live.update(Text(drafts[artifact_id], style="cyan"))

    if live is None:
        yield progress, tokens
        return
    with live:
        yield progress, tokens
