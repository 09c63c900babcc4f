"""The route serving an agent's card, with HTTP caching (ETag and Last-Modified)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from a2a.server.routes import create_agent_card_routes
from a2a.types import AgentCard
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from protocol.cards import CARD_PATH

#: How long clients and proxies may reuse a card without asking again.
CARD_CACHE_CONTROL = "public, max-age=60"


def card_routes(card: AgentCard, *, cache_control: str = CARD_CACHE_CONTROL) -> list[Route]:
    """The route serving ``card``: the SDK's (ETag, 304 on If-None-Match, Cache-Control)
    plus ``Last-Modified`` (now: when the card was built) and 304 on If-Modified-Since."""
    built = datetime.now(UTC).replace(microsecond=0)
    last_modified = format_datetime(built, usegmt=True)
    [sdk_route] = create_agent_card_routes(card, card_url=CARD_PATH, cache_control=cache_control)
    serve_card = sdk_route.endpoint

    async def endpoint(request: Request) -> Response:
        response: Response = await serve_card(request)
        response.headers["Last-Modified"] = last_modified
        # If-None-Match, when sent, decides alone (RFC 9110 13.1.3).
        since = request.headers.get("if-modified-since")
        fresh = since is not None and "if-none-match" not in request.headers
        if response.status_code == 200 and fresh and _not_modified(str(since), built):
            kept = {k: v for k, v in response.headers.items() if k != "content-length"}
            return Response(status_code=304, headers=kept)
        return response

    return [Route(CARD_PATH, endpoint, methods=["GET"])]


def _not_modified(since: str, modified: datetime) -> bool:
    """Whether ``modified`` is no later than an If-Modified-Since date (invalid: ignored)."""
    try:
        date = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    return modified <= date
