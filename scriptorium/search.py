"""``scriptorium search``: one hybrid search through the running retriever, or in this process
(``--direct``); each also says whether the collection is empty."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from scriptorium.terminal import console, out

if TYPE_CHECKING:
    from agents.retriever.settings import RetrieverSettings
    from agents.scaffold.peers import Peers
    from protocol.payloads import SearchRequest, SearchResult


async def search_through(peers: Peers, request: SearchRequest) -> tuple[SearchResult, bool]:
    """One A2A search; also whether the retriever said the collection is empty."""
    from a2a.helpers import get_data_parts
    from a2a.types import StreamResponse, Task

    from protocol.payloads import SearchResult

    empty = False

    async def on_update(event: StreamResponse, task: Task) -> None:
        nonlocal empty
        if event.HasField("status_update"):
            parts = list(event.status_update.status.message.parts)
            empty = empty or any(data.get("empty") for data in get_data_parts(parts))

    result = await peers.call("search", request, result=SearchResult, on_update=on_update)
    return result, empty


async def search_direct(
    settings: RetrieverSettings, request: SearchRequest
) -> tuple[SearchResult, bool]:
    """Search the store ``settings`` name in this process; also whether the collection is
    empty. Raises the store's errors (:class:`~agents.retriever.store.base.StoreError`)."""
    from agents.retriever.library import Library

    library = await Library.open(settings)
    try:
        result = await library.search(request)
        return result, not result.passages and await library.is_empty(request.collection)
    finally:
        await library.close()


def show_result(result: SearchResult, collection: str, *, empty: bool, as_json: bool) -> None:
    """Print the passages (or the JSON); on stderr, why there are none."""
    if as_json:
        print(result.model_dump_json())
    if not result.passages:
        named = "" if collection == "default" else f" --collection {collection}"
        console.print(
            f"collection {collection!r} is empty; run `scriptorium ingest PATH{named}`"
            if empty
            else "no passages matched"
        )
    if as_json:
        return
    for n, item in enumerate(result.passages, start=1):
        out.print(f"[bold][{n}][/] {escape(item.source)}  [dim]score {item.score:.3f}[/]")
        out.print(f"    {escape(item.text[:300])}")
