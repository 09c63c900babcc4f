"""The OpenAI-compatible server the agent talks to: its own vLLM engine or an external one.

One ``httpx.AsyncClient`` per agent, over a Unix socket for the managed engine (no TCP port
to collide or expose) or TCP for an external URL. Streams are parsed as server-sent events;
an error, whether an HTTP status or an ``error`` event mid-stream, becomes
:class:`UpstreamError` carrying vLLM's own message. Every chat request carries the active
trace context (``traceparent``), which vLLM continues when it traces.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from protocol import telemetry


class UpstreamError(Exception):
    """The engine refused or failed a request; ``status`` is its HTTP status (0: unreachable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def is_client_error(self) -> bool:
        """The request was at fault (bad parameters, unknown model)."""
        return 400 <= self.status < 500


def _error_message(response_text: str, status: int) -> str:
    try:
        body = json.loads(response_text)
    except ValueError:
        return response_text.strip()[:500] or f"HTTP {status}"
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if isinstance(error, str):
            return error
        if "detail" in body:
            return json.dumps(body["detail"])
    return response_text.strip()[:500]


def server_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000`` (where vLLM serves /metrics, /health)."""
    parts = urlsplit(base_url.rstrip("/"))
    path = parts.path[: -len("/v1")] if parts.path.endswith("/v1") else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class Upstream:
    """A client of one OpenAI-compatible inference server."""

    def __init__(
        self,
        base_url: str,
        *,
        uds: str | None = None,
        api_key: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = server_root(self.base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=uds, retries=0),
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def models(self) -> list[str]:
        """Ids of the models the server offers (raises :class:`UpstreamError`)."""
        try:
            response = await self.http.get(f"{self.base_url}/models", timeout=5.0)
        except httpx.HTTPError as exc:
            raise UpstreamError(0, f"{self.base_url} is unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise UpstreamError(response.status_code, _error_message(response.text, 0))
        return [str(item["id"]) for item in response.json().get("data", [])]

    async def metrics(self) -> str:
        """The server's Prometheus text, or "" when it has none."""
        try:
            response = await self.http.get(f"{self.root_url}/metrics", timeout=5.0)
        except httpx.HTTPError:
            return ""
        return response.text if response.status_code == 200 else ""

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming chat completion; yields each parsed chunk.

        Leaving the iteration early (or cancelling the caller) closes the connection, and
        vLLM aborts the request and frees its batch slot.
        """
        request = self.http.build_request(
            "POST",
            f"{self.base_url}/chat/completions",
            json={**body, "stream": True},
            headers=telemetry.inject(),
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamError(0, f"the inference engine is unreachable: {exc!r}") from exc
        try:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                raise UpstreamError(
                    response.status_code, _error_message(text, response.status_code)
                )
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"]
                    status = int(error.get("code") or 500) if isinstance(error, dict) else 500
                    raise UpstreamError(status, _error_message(data, status))
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamError(0, f"the inference stream broke: {exc!r}") from exc
        finally:
            await response.aclose()
