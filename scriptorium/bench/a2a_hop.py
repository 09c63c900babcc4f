"""``scriptorium bench a2a-hop``: what one A2A SendMessage round trip costs, side by side.

Three servers on loopback, each in its own process, measured in one interleaved run:

* ``raw``  a plain FastAPI endpoint that echoes the JSON body (the HTTP floor);
* ``sdk``  a bare a2a-sdk 1.3 server: ``DefaultRequestHandler`` + ``InMemoryTaskStore``;
* ``ours`` our agent scaffold: Redis task store, guards, metrics, registration.

``sdk`` and ``ours`` run the very same executor (our ``SkillExecutor`` with one echo skill),
so ``ours - sdk`` is the price of the scaffold alone.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import httpx
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from fastapi import FastAPI, Request
from starlette.applications import Starlette

from agents.scaffold.app import AgentParts, create_agent_app
from agents.scaffold.executor import SkillCall, SkillExecutor
from agents.scaffold.settings import AgentSettings
from protocol import http
from protocol.cards import JSONRPC_PATH, CardSpec, Skill, build_agent_card
from protocol.http import bind_socket
from scriptorium.bench.servers import child_servers

ROUNDS = 600
WARMUP = 50
ECHO = CardSpec(
    name="echo",
    description="Echoes its input (benchmark).",
    skills=[Skill(id="echo", name="Echo", description="Returns the request text.", tags=["bench"])],
)


async def _echo(call: SkillCall) -> None:
    await call.emit({"echo": call.data()})


def _raw_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        return await request.json()

    return app


def _sdk_app(base_url: str) -> Starlette:
    card = build_agent_card(ECHO, base_url)
    handler = DefaultRequestHandler(
        SkillExecutor("echo", {"echo": _echo}), InMemoryTaskStore(), card
    )
    return Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, JSONRPC_PATH)]
    )


def serve(kind: str, port: int) -> None:
    """Serve one of the three apps (runs in a child process)."""
    base_url = f"http://127.0.0.1:{port}"
    app: Any
    if kind == "raw":
        app = _raw_app()
    elif kind == "sdk":
        app = _sdk_app(base_url)
    else:
        app = create_agent_app(AgentParts(ECHO, {"echo": _echo}), AgentSettings(), base_url)
    asyncio.run(http.serve(app, bind_socket("127.0.0.1", port)))


def _send_message_body() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": uuid.uuid4().hex,
        "method": "SendMessage",
        "params": {
            "message": {
                "role": "ROLE_USER",
                "messageId": uuid.uuid4().hex,
                "parts": [{"text": "ping"}],
            }
        },
    }


async def _one(http: httpx.AsyncClient, kind: str, base: str) -> float:
    started = time.perf_counter()
    if kind == "raw":
        response = await http.post(f"{base}/echo", json=_send_message_body())
        response.raise_for_status()
    else:
        response = await http.post(f"{base}{JSONRPC_PATH}", json=_send_message_body())
        body = response.json()
        if "result" not in body:
            raise RuntimeError(f"{kind} answered {body}")
    return (time.perf_counter() - started) * 1000


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run() -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    kinds = ("raw", "sdk", "ours")
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    async with (
        child_servers("scriptorium.bench.a2a_hop", kinds, prefix="bench-hop") as urls,
        httpx.AsyncClient(timeout=10.0, headers={"A2A-Version": "1.0"}) as http,
    ):
        for i in range(WARMUP + ROUNDS):
            for kind, url in urls.items():
                elapsed = await _one(http, kind, url)
                if i >= WARMUP:
                    samples[kind].append(elapsed)
    raw, sdk, ours = (statistics.median(samples[k]) for k in ("raw", "sdk", "ours"))
    return {
        "rounds": ROUNDS,
        "raw_http_p50_ms": round(raw, 3),
        "sdk_inmemory_p50_ms": round(sdk, 3),
        "a2a_p50_ms": round(ours, 3),
        "a2a_p99_ms": round(_p(samples["ours"], 0.99), 3),
        "added_p50_ms": round(ours - raw, 3),
        "sdk_added_p50_ms": round(sdk - raw, 3),
        "ours_minus_sdk_p50_ms": round(ours - sdk, 3),
        "target_ours_minus_sdk_ms": 0.5,
    }


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
