"""Valkey faults under a running stack: real processes, a Valkey of the test's own.

* Valkey restarted with append-only persistence on: every agent is registered and healthy
  again within two heartbeats of its return, and a session and its event log are intact.
* Valkey down while a question is in flight: the client gets a clear error naming Redis
  within the timeout (no hang); when Valkey returns (empty) the agents register again and
  the next question is answered.

The other faults of issue #11 are covered where their machinery lives: a writer replica
killed mid-question (``tests/test_answer.py``), the orchestrator restarted mid-stream
(``tests/test_answer_resume.py``), the inference agent down (``tests/test_answer.py``),
and Redis down under one agent's requests (``tests/test_faults_redis.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from agents.scaffold.peers import Peers
from protocol.payloads import AnswerRequest
from protocol.settings import CommonSettings
from registry.events import SessionLog
from registry.settings import RegistrySettings
from scriptorium.ask import ANSWER_TIMEOUT_S, ask
from scriptorium.corpora import DEMO_QUESTIONS
from scriptorium.launcher import Stack
from scriptorium.testing import StackFactory, corpus, ingest, wait_for
from tests.conftest import AppendOnlyValkey, RestartableValkey

pytestmark = pytest.mark.slow

HEARTBEAT_S = 0.5
HEARTBEAT_TTL_S = 1.5
#: What "within two heartbeats" allows beyond them: the registry's and the agents' Redis
#: clients reconnecting, and this test's polling of ``GET /agents`` on a busy 2-core machine.
SLACK_S = 2.0
PROBE_EVENTS = 5
#: Longest a question may take to fail once Valkey is gone (the task store gives up after
#: ``SCRIPTORIUM_TASK_STORE_TIMEOUT_S``, 3 s by default; steps time out later than that).
FAIL_WITHIN_S = 30.0


def _healthz(url: str) -> int:
    try:
        return httpx.get(url + "/healthz", timeout=2.0).status_code
    except httpx.HTTPError:
        return 0


def _healthy_since(stack: Stack, ids: set[str], since_ms: int) -> bool:
    """Every instance of ``ids`` healthy, with a heartbeat at or after ``since_ms``."""
    try:
        records = stack.agents_json()
    except httpx.HTTPError:
        return False
    fresh = {r["id"] for r in records if r["state"] == "healthy" and r["last_seen"] >= since_ms}
    return ids <= fresh


async def _events(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    """The session's whole event log, read through the registry (SSE, not followed)."""
    response = await http.get(f"/sessions/{session_id}/events", params={"follow": "false"})
    response.raise_for_status()
    lines = response.text.splitlines()
    return [json.loads(line[5:]) for line in lines if line.startswith("data:")]


async def test_fault_valkey_restart_with_append_only_keeps_registrations_sessions_and_logs(
    stack_factory: StackFactory, aof_valkey: AppendOnlyValkey
) -> None:
    team = stack_factory(
        agents=("orchestrator", "writer"),
        redis_url=aof_valkey.url,
        heartbeat_interval_s=HEARTBEAT_S,
        heartbeat_ttl_s=HEARTBEAT_TTL_S,
    )
    try:
        records = team.agents_json()
        ids = {r["id"] for r in records}
        urls = [str(r["url"]) for r in records]
        async with httpx.AsyncClient(
            base_url=team.registry_url, headers=team.settings.auth_headers(), timeout=10.0
        ) as http:
            opened = await http.post(
                "/sessions", json={"roles": {"writer": "write"}, "lease_s": 600}
            )
            assert opened.status_code == 201, opened.text
            session_id = opened.json()["id"]
            client = aioredis.from_url(aof_valkey.url)
            log = SessionLog(
                client,
                RegistrySettings(redis_url=aof_valkey.url, redis_prefix=team.settings.redis_prefix),
            )
            try:
                for n in range(PROBE_EVENTS):
                    await log.append(
                        session_id,
                        sender="test",
                        recipient="writer",
                        kind="probe",
                        payload={"n": n},
                    )
            finally:
                await client.aclose()
            session = (await http.get(f"/sessions/{session_id}")).json()
            logged = await _events(http, session_id)
            assert [e["kind"] for e in logged].count("probe") == PROBE_EVENTS

            await asyncio.to_thread(aof_valkey.stop)
            await wait_for(
                lambda: all(_healthz(url) == 503 for url in urls), 10, "agents saw Valkey go"
            )
            # The outage outlasts the heartbeat TTL: every record is stale when Valkey returns,
            # so only heartbeats sent after the restart can make the agents healthy again. The
            # sleep is the scenario (an outage this long), not a wait for a condition: what it
            # sets up is checked below (a heartbeat at or after back_ms).
            await asyncio.sleep(HEARTBEAT_TTL_S)
            back_ms = int(time.time() * 1000)
            await asyncio.to_thread(aof_valkey.start)
            within = 2 * HEARTBEAT_S + SLACK_S
            await wait_for(
                lambda: _healthy_since(team, ids, back_ms),
                within,
                f"every agent registered and healthy again ({sorted(ids)})",
            )

            assert (await http.get(f"/sessions/{session_id}")).json() == session
            assert await _events(http, session_id) == logged
            released = await http.delete(f"/sessions/{session_id}")
            assert released.status_code == 204, released.text
            after = await _events(http, session_id)
            assert after[: len(logged)] == logged
            assert after[-1]["kind"] == "session.released"
            assert [e["seq"] for e in after] == list(range(1, len(after) + 1))
    finally:
        await asyncio.to_thread(team.stop)


async def test_fault_valkey_down_during_a_question_fails_it_clearly_then_the_stack_recovers(
    stack_factory: StackFactory, own_valkey: RestartableValkey, inference_url: str
) -> None:
    team = stack_factory(
        env={"SCRIPTORIUM_INFERENCE_URL": inference_url},
        redis_url=own_valkey.url,
        heartbeat_interval_s=HEARTBEAT_S,
        heartbeat_ttl_s=HEARTBEAT_TTL_S,
    )
    try:
        collection = f"faults_{uuid.uuid4().hex[:8]}"
        wanted = ("wiki/Sputnik 1", "wiki/Yuri Gagarin")
        await ingest(team.registry_url, collection, [d for d in corpus() if d.id in wanted])
        request = AnswerRequest(question=DEMO_QUESTIONS[0], collection=collection, max_rounds=3)
        ids = {r["id"] for r in team.agents_json()}
        async with Peers.over_http(
            CommonSettings(), registry_url=team.registry_url, request_timeout_s=ANSWER_TIMEOUT_S
        ) as peers:
            underway = asyncio.Event()
            asking = asyncio.create_task(
                ask(request, peers, on_progress=lambda _text, _data: underway.set())
            )
            await asyncio.wait_for(underway.wait(), 60)
            await asyncio.to_thread(own_valkey.stop)
            done, _ = await asyncio.wait({asking}, timeout=FAIL_WITHIN_S)
            if not done:
                asking.cancel()
                pytest.fail(f"the question still hung {FAIL_WITHIN_S:.0f}s after Valkey went")
            failed = asking.exception()
            assert failed is not None, "answered although Redis went down mid-question"
            assert "redis" in str(failed).lower(), f"{type(failed).__name__}: {failed}"

            back_ms = int(time.time() * 1000)
            await asyncio.to_thread(own_valkey.start)
            await wait_for(
                lambda: _healthy_since(team, ids, back_ms),
                2 * HEARTBEAT_S + SLACK_S,
                "every agent registered again on the emptied Valkey",
            )
            answer = await asyncio.wait_for(ask(request, peers), 120)
        assert answer.sentences or answer.abstained
    finally:
        await asyncio.to_thread(team.stop)
