"""``scriptorium ingest``: local files read here and sent inline to the running retriever in
batches under the request limit, or stored in this process (``--direct``); progress counts files.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from scriptorium.terminal import console, out

if TYPE_CHECKING:
    from agents.retriever.settings import RetrieverSettings
    from agents.scaffold.peers import Peers
    from protocol.payloads import Document, IngestReport, SkippedFile
    from registry.records import AgentRecord

#: ``show(files=, docs=, chunks=, skipped=, now=)``: the progress bar's new totals.
Show = Callable[..., None]


@dataclass
class FileBatch:
    """Documents for one ingest request, and the files they complete."""

    documents: list[Document] = field(default_factory=list)
    size: int = 0
    #: Files read whole before this batch (done once the previous batches are stored).
    files_before: int = 0
    #: ``done_after[i]``: files read whole once ``documents[: i + 1]`` are stored.
    done_after: list[int] = field(default_factory=list)
    #: Files read whole once this batch is stored.
    files_done: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)


def file_batches(paths: list[Path], *, root: Path, max_bytes: int) -> Iterator[FileBatch]:
    """Local files read into batches of inline documents, each request under ``max_bytes``.

    A file is many documents when it is a ``.jsonl`` or very long, and its documents may
    span batches; a batch is cut only when the next document would not fit, so the files
    before it are known to be whole.
    """
    from agents.retriever.library import document_payload
    from agents.retriever.readers import Skipped, iter_paths, read_paths
    from protocol.payloads import SkippedFile
    from scriptorium.inline import ENVELOPE_BYTES, wire_size

    budget = max_bytes - ENVELOPE_BYTES
    files_done = 0
    batch = FileBatch()
    for file in iter_paths(paths):
        items = [file] if isinstance(file, Skipped) else read_paths([file], root=root)
        for item in items:
            if isinstance(item, Skipped):
                batch.skipped.append(SkippedFile(source=item.source, reason=item.reason))
                continue
            if not item.text:
                batch.skipped.append(SkippedFile(source=item.source, reason="empty: no text"))
                continue
            document = document_payload(item)
            size = wire_size(document)
            if size > budget:
                batch.skipped.append(
                    SkippedFile(
                        source=item.source,
                        reason=f"{size} bytes as JSON, more than one request may carry "
                        f"({max_bytes}, SCRIPTORIUM_MAX_REQUEST_BYTES); split it or use --direct",
                    )
                )
                continue
            if batch.documents and batch.size + size > budget:
                yield batch
                batch = FileBatch(files_before=files_done, files_done=files_done)
            batch.documents.append(document)
            batch.size += size
            batch.done_after.append(files_done)
        files_done += 1
        if batch.documents:
            batch.done_after[-1] = files_done
        batch.files_done = files_done
    yield batch


async def ingest_through(
    peers: Peers, paths: list[Path], collection: str, *, files: int, max_bytes: int
) -> tuple[IngestReport, str]:
    """Send local files to the retriever inline, batch by batch; the totals and its URL.

    ``files`` is how many the progress bar counts. The next batch is read in a thread while
    the retriever stores the current one.
    """
    from protocol.payloads import IngestReport

    record = await peers.find("ingest")  # fail before reading anything if there is none
    batches = file_batches(paths, root=Path.cwd(), max_bytes=max_bytes)
    with _progress(files) as show:
        tally = _Tally(IngestReport(), show)
        batch = await asyncio.to_thread(next, batches, None)
        while batch is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            await _send_batch(peers, record, batch, collection, tally)
            batch = await upcoming
    return tally.report, record.url


async def ingest_direct(
    settings: RetrieverSettings, paths: list[Path], collection: str, *, files: int
) -> IngestReport:
    """Ingest in this process, into the store ``settings`` name (``--direct``).

    Raises the store's errors (:class:`~agents.retriever.store.base.StoreError`).
    """
    from agents.retriever.ingest import IngestStats
    from agents.retriever.library import Library, report

    with console.status("loading the embedding model and opening the store ..."):
        library = await Library.open(settings)
    try:
        with _progress(files) as show:

            async def progress(stats: IngestStats) -> None:
                show(
                    files=len(stats.files),
                    docs=stats.documents,
                    chunks=stats.chunks,
                    skipped=len(stats.skipped),
                    now=stats.current,
                )

            stats = await library.ingest(
                paths=paths, collection=collection, root=Path.cwd(), on_progress=progress
            )
        return report(stats)
    finally:
        await library.close()


def show_totals(totals: IngestReport, collection: str, elapsed_s: float, where: str) -> None:
    """The summary ``scriptorium ingest`` ends with: one row of totals, where the documents
    went, and every file skipped with the reason."""
    table = Table(title=f"ingested into {collection!r}")
    for column in ("ingested", "replaced", "unchanged", "skipped", "chunks", "chunks/s"):
        table.add_column(column, justify="right")
    table.add_row(
        str(totals.ingested),
        str(totals.replaced),
        str(totals.unchanged),
        str(len(totals.skipped)),
        str(totals.chunks),
        f"{totals.chunks / elapsed_s if elapsed_s > 0 else 0.0:.0f}",
    )
    out.print(table)
    out.print(f"  {where}")
    for skipped in totals.skipped:
        out.print(f"  skipped {escape(skipped.source)}: {escape(skipped.reason)}")


@dataclass
class _Tally:
    """Running totals of an ingestion through the retriever, shown as they change."""

    report: IngestReport
    show: Show
    docs: int = 0

    def update(self, files: int, *, docs: int = 0, chunks: int = 0, now: str = "") -> None:
        """Show the totals plus what the request in flight has done so far."""
        self.show(
            files=files,
            docs=self.docs + docs,
            chunks=self.report.chunks + chunks,
            skipped=len(self.report.skipped),
            now=now,
        )

    def add(self, report: IngestReport, docs: int) -> None:
        """Count a stored batch."""
        from scriptorium.inline import add_reports

        self.report = add_reports(self.report, report)
        self.docs += docs


async def _send_batch(
    peers: Peers, record: AgentRecord, batch: FileBatch, collection: str, tally: _Tally
) -> None:
    """One ingest request; files count as done as the retriever reports their documents."""
    from a2a.helpers import get_data_parts
    from a2a.types import StreamResponse, Task

    from protocol.payloads import IngestReport, IngestRequest

    tally.report.skipped.extend(batch.skipped)
    tally.update(batch.files_before)
    if batch.documents:

        async def on_update(event: StreamResponse, task: Task) -> None:
            if not event.HasField("status_update"):
                return
            for data in get_data_parts(list(event.status_update.status.message.parts)):
                done = min(int(data.get("documents", 0)), len(batch.documents))
                tally.update(
                    batch.done_after[done - 1] if done else batch.files_before,
                    docs=done,
                    chunks=int(data.get("chunks", 0)),
                    now=batch.documents[done - 1].source if done else "",
                )

        request = IngestRequest(documents=batch.documents, collection=collection)
        report = await peers.call(
            "ingest", request, result=IngestReport, record=record, on_update=on_update
        )
        tally.add(report, len(batch.documents))
    tally.update(batch.files_done)


@contextlib.contextmanager
def _progress(files: int) -> Iterator[Show]:
    """A progress bar over files; yields ``show(files=, docs=, chunks=, skipped=, now=)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "files · {task.fields[docs]} docs · {task.fields[chunks]} chunks · "
            "{task.fields[rate]:.0f} chunks/s · {task.fields[skipped]} skipped"
        ),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("ingesting", total=files, docs=0, chunks=0, rate=0.0, skipped=0)

        def show(*, files: int, docs: int, chunks: int, skipped: int, now: str = "") -> None:
            elapsed = time.perf_counter() - started
            bar.update(
                task,
                completed=files,
                docs=docs,
                chunks=chunks,
                rate=chunks / elapsed if elapsed > 0 else 0.0,
                skipped=skipped,
                description=f"ingesting {Path(now).name[:30]}" if now else "ingesting",
            )

        yield show
        bar.update(task, description="done")
