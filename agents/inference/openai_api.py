"""The OpenAI-compatible endpoint: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Requests pass through to the engine's own OpenAI server unchanged, and responses (streamed
or not) come back byte for byte, so every OpenAI client, LiteLLM and ADK's
``LiteLlm(model="hosted_vllm/...")`` see vLLM itself, validation errors included. The agent adds
its bearer token check, its body limit, a clear 503 while the engine starts, and abort on
disconnect: a client that goes away closes the upstream request, and vLLM frees the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from agents.inference.engine import Engine

T = TypeVar("T")
PASSED_HEADERS = ("content-type", "accept", "traceparent", "tracestate")


def openai_error(status: int, message: str, kind: str = "ServiceUnavailableError") -> JSONResponse:
    """An error in the OpenAI shape, which OpenAI clients turn into a typed exception."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status)


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work``, cancelling it if the client disconnects first (then returns None)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not job.done():
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
    return job.result() if not job.cancelled() else None


def openai_routes(engine: Callable[[], Engine]) -> list[BaseRoute]:
    """Routes that pass OpenAI API calls through to ``engine()``'s server."""

    async def passthrough(request: Request) -> Response:
        current = engine()
        if not current.ready:
            response = openai_error(
                503, "the inference engine is starting (or restarting); retry in a few seconds"
            )
            response.headers["Retry-After"] = "5"
            return response
        upstream = current.upstream
        path = request.url.path.removeprefix("/v1")
        headers = {k: v for k in PASSED_HEADERS if (v := request.headers.get(k))}
        outgoing = upstream.http.build_request(
            request.method,
            upstream.base_url + path,
            params=request.query_params,
            content=await request.body(),
            headers=headers,
        )
        try:
            answer: Any = await _unless_disconnected(
                request, upstream.http.send(outgoing, stream=True)
            )
        except httpx.HTTPError as exc:
            return openai_error(502, f"the inference engine is unreachable: {exc!r}")
        if answer is None:  # the client left before the engine answered; vLLM aborted it
            return Response(status_code=499)
        kept = {k: v for k in ("content-type",) if (v := answer.headers.get(k))}
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=kept,
            background=BackgroundTask(answer.aclose),
        )

    return [
        Route("/v1/chat/completions", passthrough, methods=["POST"]),
        Route("/v1/completions", passthrough, methods=["POST"]),
        Route("/v1/models", passthrough, methods=["GET"]),
    ]
