"""``scriptorium bench streams``: what durable, resumable event streams cost, side by side.

Servers on loopback, each in its own process, all running the same executor (one skill that
streams numbered text chunks), measured in one interleaved run:

* ``sdk``     a bare a2a-sdk 1.3 server: ``DefaultRequestHandler`` + ``InMemoryTaskStore``;
* ``ours``    our scaffold: every event in the task's Redis Stream, writes coalesced
  (``SCRIPTORIUM_TASK_WRITE_COALESCE_S``, default 0.25 s);
* ``eager``   our scaffold with coalescing off (each write goes out as soon as possible);
* ``ours-b``  a second replica of ``ours`` (same Valkey) that streams are resumed on.

Figures: events/s per server (``persistence_cost`` = 1 - ours/sdk, target ≤ 0.10, and the same
for ``eager`` to show what coalescing buys); ``resume_p50_ms``: from a resumed SubscribeToTask
(cursor, other replica) to the first missed event; ``reconnects``/``lost``/``duplicated`` over
streams cut at random points; gRPC against JSON-RPC round-trip p50 on ``ours``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx
from a2a.client import Client, ClientCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import StreamResponse, SubscribeToTaskRequest
from starlette.applications import Starlette

from agents.scaffold.app import AgentParts, serve_agent
from agents.scaffold.executor import SkillCall, SkillExecutor
from agents.scaffold.settings import AgentSettings
from protocol import http
from protocol.cards import JSONRPC_PATH, CardSpec, Skill, build_agent_card
from protocol.client import (
    A2A_VERSION_HEADER,
    call_skill,
    open_client,
    skill_message,
)
from protocol.http import bind_socket
from protocol.streams import event_sequence, resume_parameters
from scriptorium.bench.servers import child_servers
from scriptorium.faults import DroppingTransport

CHUNKS = 400
CONCURRENCY = 4
THROUGHPUT_ROUNDS = 7
RESUMES = 30
TICK_CHUNKS = 60
TICK_S = 0.01
DROPS = 50
HOPS = 200
STREAMER = CardSpec(
    name="streamer",
    description="Streams numbered text chunks (benchmark).",
    skills=[Skill(id=s, name=s, description=s, tags=["bench"]) for s in ("count", "tick", "echo")],
)


async def _count(call: SkillCall) -> None:
    """Stream ``n`` chunks as fast as the server takes them (``pause`` seconds apart)."""
    data = call.data()
    n, pause = int(data["n"]), float(data.get("pause", 0.0))
    for i in range(n):
        await call.stream_text("numbers", f"{i} ", last=i == n - 1)
        if pause:
            await asyncio.sleep(pause)


async def _echo(call: SkillCall) -> None:
    await call.emit({"echo": call.data()})


HANDLERS = {"count": _count, "tick": _count, "echo": _echo}


def _sdk_app(base_url: str) -> Starlette:
    card = build_agent_card(STREAMER, base_url)
    handler = DefaultRequestHandler(SkillExecutor("streamer", HANDLERS), InMemoryTaskStore(), card)
    return Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, JSONRPC_PATH)]
    )


def serve(kind: str, port: int) -> None:
    """Serve one of the servers (runs in a child process)."""
    if kind == "sdk":
        app = _sdk_app(f"http://127.0.0.1:{port}")
        asyncio.run(http.serve(app, bind_socket("127.0.0.1", port)))
        return
    settings = AgentSettings(
        instance_id=f"streamer-{kind}",
        task_write_coalesce_s=0.0 if kind == "eager" else AgentSettings().task_write_coalesce_s,
    )
    parts = AgentParts(STREAMER, HANDLERS)
    asyncio.run(serve_agent(parts, settings, port=port))


async def _events_per_s(client: Client) -> float:
    """Stream CONCURRENCY tasks of CHUNKS chunks at once; events received per second."""

    async def one() -> int:
        received = 0
        async for _event in client.send_message(skill_message("count", {"n": CHUNKS})):
            received += 1
        return received

    started = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
    return sum(counts) / (time.perf_counter() - started)


async def _resume_ms(first: Client, second: Client, cut_after: int) -> float:
    """Read ``cut_after`` events from ``first``, drop it, resume on ``second``: ms to an event."""
    request = skill_message("tick", {"n": TICK_CHUNKS, "pause": TICK_S})
    stream = cast(AsyncGenerator[StreamResponse, None], first.send_message(request))
    cursor, task_id = 0, ""
    async for event in stream:
        if event.HasField("task"):
            task_id = event.task.id
        elif event.HasField("status_update"):
            task_id = event.status_update.task_id
        cursor = event_sequence(event) or cursor
        cut_after -= 1
        if cut_after <= 0 and cursor:
            break
    await stream.aclose()
    context = ClientCallContext(service_parameters=resume_parameters(cursor))
    started = time.perf_counter()
    resumed = second.subscribe(SubscribeToTaskRequest(id=task_id), context=context)
    elapsed = 0.0
    async for _event in resumed:
        if not elapsed:
            elapsed = (time.perf_counter() - started) * 1000
    return elapsed


async def _dropped(urls: tuple[str, str]) -> dict[str, int]:
    """Streams cut at random points, resumed on the other replica: lost and repeated chunks."""
    transport = DroppingTransport(DROPS, seed=3, max_chunks=40)
    expected = "".join(f"{i} " for i in range(TICK_CHUNKS))
    lost = duplicated = answers = 0
    async with httpx.AsyncClient(
        transport=transport, headers={A2A_VERSION_HEADER: "1.0"}, timeout=60
    ) as http:
        clients = [await open_client(url, http) for url in urls]
        while transport.remaining > 0 and answers < 200:
            texts: list[str] = []

            async def record(event: Any, _task: Any, into: list[str] = texts) -> None:
                if event.HasField("artifact_update"):
                    into.extend(p.text for p in event.artifact_update.artifact.parts)

            async def other(pool: list[Client] = clients) -> Client:
                pool.reverse()
                return pool[0]

            payload = {"n": TICK_CHUNKS, "pause": 0.002}
            await call_skill(clients[0], "tick", payload, on_update=record, reconnect=other)
            answers += 1
            got = "".join(texts).split()
            want = expected.split()
            duplicated += max(0, len(got) - len(set(got)))
            lost += len(set(want) - set(got))
    return {"reconnects": transport.dropped, "lost": lost, "duplicated": duplicated}


async def _hop_ms(client: Client) -> float:
    started = time.perf_counter()
    async for _event in client.send_message(skill_message("echo", {"ping": 1})):
        pass
    return (time.perf_counter() - started) * 1000


async def run() -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    kinds = ("sdk", "ours", "eager", "ours-b")
    rates: dict[str, list[float]] = {k: [] for k in ("sdk", "ours", "eager")}
    async with child_servers("scriptorium.bench.streams", kinds, prefix="bench-streams") as urls:
        async with httpx.AsyncClient(timeout=60.0, headers={A2A_VERSION_HEADER: "1.0"}) as http:
            clients = {kind: await open_client(url, http) for kind, url in urls.items()}
            for kind in rates:  # warm-up
                await _events_per_s(clients[kind])
            for _ in range(THROUGHPUT_ROUNDS):
                for kind in rates:
                    rates[kind].append(await _events_per_s(clients[kind]))
            resumes = [
                await _resume_ms(clients["ours"], clients["ours-b"], 5 + (i * 7) % 40)
                for i in range(RESUMES)
            ]
            grpc = await open_client(urls["ours"], http, transport="GRPC")
            jsonrpc = await open_client(urls["ours"], http, transport="JSONRPC")
            hops: dict[str, list[float]] = {"grpc": [], "jsonrpc": []}
            for _ in range(HOPS):
                hops["grpc"].append(await _hop_ms(grpc))
                hops["jsonrpc"].append(await _hop_ms(jsonrpc))
        faults = await _dropped((urls["ours"], urls["ours-b"]))
    sdk, ours, eager = (statistics.median(rates[k]) for k in ("sdk", "ours", "eager"))
    grpc_p50, jsonrpc_p50 = statistics.median(hops["grpc"]), statistics.median(hops["jsonrpc"])
    return {
        "events_per_task": CHUNKS,
        "concurrent_streams": CONCURRENCY,
        "sdk_inmemory_events_per_s": round(sdk),
        "redis_stream_events_per_s": round(ours),
        "redis_stream_uncoalesced_events_per_s": round(eager),
        "persistence_cost": round(1 - ours / sdk, 3),
        "persistence_cost_uncoalesced": round(1 - eager / sdk, 3),
        "target_persistence_cost": 0.10,
        "resume_p50_ms": round(statistics.median(resumes), 1),
        "resume_p90_ms": round(sorted(resumes)[int(0.9 * len(resumes))], 1),
        **faults,
        "grpc_round_trip_p50_ms": round(grpc_p50, 3),
        "jsonrpc_round_trip_p50_ms": round(jsonrpc_p50, 3),
        "grpc_over_jsonrpc_ratio": round(grpc_p50 / jsonrpc_p50, 3),
    }


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
