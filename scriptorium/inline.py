"""Sending documents inline to the running retriever, in requests under the body limit.

``scriptorium ingest`` reads files into batches with the same sizes (it also tracks which
files are done); the demo, the evaluation and the tests send documents they hold in memory
with :func:`ingest_documents`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence

from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from agents.scaffold.peers import Peers
from protocol.payloads import Document, IngestReport, IngestRequest

#: Room kept in each ingest request for the JSON-RPC envelope (about 300 bytes).
ENVELOPE_BYTES = 4096
INGEST_TIMEOUT_S = 600.0


def wire_size(document: Document) -> int:
    """Bytes a document adds to a request, encoded as the A2A client sends it.

    The client puts the payload in a protobuf ``Struct`` (every number a double) and sends
    compact UTF-8 JSON; the extra byte is the comma between documents.
    """
    struct = Struct()
    struct.update(document.model_dump(mode="json"))
    data = json_format.MessageToDict(struct)
    return len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()) + 1


def document_batches(documents: Iterable[Document], max_bytes: int) -> Iterator[list[Document]]:
    """``documents`` grouped so that each request stays under ``max_bytes``.

    Raises ValueError for a document no request can carry.
    """
    budget = max_bytes - ENVELOPE_BYTES
    batch: list[Document] = []
    size = 0
    for document in documents:
        width = wire_size(document)
        if width > budget:
            raise ValueError(
                f"{document.source}: {width} bytes as JSON, more than one request may carry "
                f"({max_bytes}, SCRIPTORIUM_MAX_REQUEST_BYTES)"
            )
        if batch and size + width > budget:
            yield batch
            batch, size = [], 0
        batch.append(document)
        size += width
    if batch:
        yield batch


def add_reports(total: IngestReport, more: IngestReport) -> IngestReport:
    """Two ingestion reports as one."""
    return IngestReport(
        ingested=total.ingested + more.ingested,
        unchanged=total.unchanged + more.unchanged,
        replaced=total.replaced + more.replaced,
        chunks=total.chunks + more.chunks,
        skipped=[*total.skipped, *more.skipped],
    )


async def ingest_documents(
    peers: Peers,
    documents: Sequence[Document],
    collection: str = "default",
    *,
    max_bytes: int,
    on_batch: Callable[[int, int, IngestReport], None] | None = None,
) -> IngestReport:
    """Ingest ``documents`` through the retriever (skill ``ingest``), batch by batch.

    ``on_batch(number, batches, report)`` is called after each batch is stored.
    """
    record = await peers.find("ingest")
    batches = list(document_batches(documents, max_bytes))
    total = IngestReport()
    for number, batch in enumerate(batches, start=1):
        request = IngestRequest(documents=batch, collection=collection)
        report = await peers.call("ingest", request, result=IngestReport, record=record)
        total = add_reports(total, report)
        if on_batch is not None:
            on_batch(number, len(batches), report)
    return total
