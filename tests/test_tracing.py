"""OpenTelemetry traces: one question, one trace, across the whole team.

The registry and the five agents run in this process (over real HTTP, each its own app), so
one in-memory exporter sees every span; the inference agent fronts the session's vLLM. The
caller does not trace: the orchestrator's span is the root, as for ``scriptorium ask``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.helpers import get_data_parts
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from agents.critic.agent import CriticSettings
from agents.critic.agent import parts as critic_parts
from agents.inference.agent import parts as inference_parts
from agents.inference.settings import InferenceSettings
from agents.orchestrator.agent import OrchestratorSettings
from agents.orchestrator.agent import parts as orchestrator_parts
from agents.retriever.agent import parts as retriever_parts
from agents.retriever.library import document_payload
from agents.retriever.settings import RetrieverSettings
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall, request_headers
from agents.scaffold.peers import Peers
from agents.scaffold.settings import AgentSettings
from agents.writer.agent import WriterSettings
from agents.writer.agent import parts as writer_parts
from protocol import telemetry
from protocol.cards import CardSpec, Skill
from protocol.client import TRANSPORTS, call_skill, open_client, skill_message
from protocol.payloads import Answer, AnswerRequest
from protocol.settings import AGENT_NAMES, CommonSettings
from registry.api import create_app
from registry.settings import RegistrySettings
from scriptorium.corpora import DEMO_NEEDED, DEMO_QUESTIONS, demo_documents, wiki_id
from scriptorium.inline import ingest_documents
from scriptorium.launcher import free_port
from scriptorium.testing import new_prefix, running_agent, serve_app, wait_for

pytestmark = pytest.mark.slow
COLLECTION = "traced"


@contextlib.contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    """Scriptorium's spans go to an in-memory exporter inside the block."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.using_provider(provider):
        yield exporter
    provider.shutdown()


# --- propagation on every transport ---------------------------------------------------------


async def probe(call: SkillCall) -> None:
    """Answers with the trace context it received and the span it runs in."""
    headers = request_headers(call.context)
    here = trace.get_current_span().get_span_context()
    await call.emit(
        {
            "traceparent": headers.get("traceparent", ""),
            "tracestate": headers.get("tracestate", ""),
            "trace_id": format(here.trace_id, "032x"),
        }
    )


PROBE = AgentParts(
    card=CardSpec(
        name="probe",
        description="Reports the trace context of each call.",
        skills=[Skill(id="probe", name="probe", description="probe", tags=["test"])],
    ),
    handlers={"probe": probe},
)


@pytest.fixture
async def probe_url(redis_url: str, redis_prefix: str) -> AsyncIterator[str]:
    settings = AgentSettings(redis_url=redis_url, redis_prefix=redis_prefix)
    async with running_agent(PROBE, settings) as url:
        yield url


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_traceparent_goes_out_on_every_transport(
    probe_url: str, a2a_http: httpx.AsyncClient, transport: str
) -> None:
    client = await open_client(probe_url, a2a_http, transport=transport)
    caller = SpanContext(
        trace_id=int(uuid.uuid4().hex, 16),
        span_id=int(uuid.uuid4().hex[:16], 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("scriptorium", "probe")]),
    )
    with recording() as exporter:
        token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(caller)))
        try:
            task = await call_skill(client, "probe", {})
        finally:
            otel_context.detach(token)
        spans = exporter.get_finished_spans()
    seen = get_data_parts(list(task.artifacts[-1].parts))[0]
    (client_span,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    (server_span,) = [s for s in spans if s.kind == SpanKind.SERVER]
    trace_id = format(caller.trace_id, "032x")
    assert seen["traceparent"] == f"00-{trace_id}-{client_span.context.span_id:016x}-01"
    assert seen["tracestate"] == "scriptorium=probe"
    assert seen["trace_id"] == trace_id
    assert client_span.parent is not None
    assert client_span.parent.span_id == caller.span_id
    assert server_span.parent is not None
    assert server_span.parent.span_id == client_span.context.span_id
    assert client_span.name == "invoke_agent probe"
    assert client_span.attributes is not None
    assert server_span.attributes is not None
    assert client_span.attributes[telemetry.TASK_ID] == task.id
    assert server_span.attributes[telemetry.TASK_ID] == task.id
    assert client_span.attributes[telemetry.TASK_STATE] == "TASK_STATE_COMPLETED"
    assert server_span.attributes[telemetry.TASK_STATE] == "TASK_STATE_COMPLETED"


async def test_nothing_goes_out_when_the_caller_does_not_trace(
    probe_url: str, a2a_http: httpx.AsyncClient
) -> None:
    for transport in TRANSPORTS:
        client = await open_client(probe_url, a2a_http, transport=transport)
        task = await call_skill(client, "probe", {})
        seen = get_data_parts(list(task.artifacts[-1].parts))[0]
        assert seen == {"traceparent": "", "tracestate": "", "trace_id": "0" * 32}, transport


def test_tracing_is_off_unless_the_environment_asks() -> None:
    assert telemetry.exporters_from({}) == []
    assert telemetry.exporters_from({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert telemetry.configure_tracing("x", environ={}) is None
    assert telemetry.configure_tracing("x", environ={"OTEL_SDK_DISABLED": "true"}) is None
    (otlp,) = telemetry.exporters_from({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert type(otlp).__module__.startswith("opentelemetry.exporter.otlp.proto.http")
    (discard,) = telemetry.exporters_from({"OTEL_TRACES_EXPORTER": "discard"})
    assert isinstance(discard, telemetry.DiscardExporter)
    with pytest.raises(ValueError, match="use one or more of"):
        telemetry.exporters_from({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_a2a_sdk_spans_are_dropped_unless_asked_for() -> None:
    quiet = telemetry.ScriptoriumTracerProvider()
    assert isinstance(quiet.get_tracer(telemetry.A2A_SDK_SCOPE), trace.NoOpTracer)
    assert not isinstance(quiet.get_tracer(telemetry.INSTRUMENTATION), trace.NoOpTracer)
    loud = telemetry.ScriptoriumTracerProvider(sdk_spans=True)
    assert not isinstance(loud.get_tracer(telemetry.A2A_SDK_SCOPE), trace.NoOpTracer)


def test_the_managed_vllm_traces_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.inference.engine import ManagedEngine

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")
    quiet = ManagedEngine(InferenceSettings())
    assert "--otlp-traces-endpoint" not in quiet.command()
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" not in quiet.environment()
    traced = ManagedEngine(InferenceSettings(engine_otlp_traces_endpoint="http://collector:4317"))
    command = traced.command()
    assert command[command.index("--otlp-traces-endpoint") + 1] == "http://collector:4317"


async def test_a_stopping_process_exports_its_last_spans(redis_url: str) -> None:
    """uvicorn ends a process stopped by SIGTERM with that signal, past the SDK's exit hook:
    the app's shutdown exports what is left."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SCRIPTORIUM_REDIS_PREFIX": new_prefix(),
        "SCRIPTORIUM_LOG_JSON": "true",
        "OTEL_TRACES_EXPORTER": "discard",
    }
    registry = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scriptorium",
        "registry",
        "--port",
        str(port),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def up() -> bool:
                try:
                    return (await http.get(f"{url}/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_for(up, 30, "the registry answering")
            refused = await http.post(f"{url}/sessions", json={"roles": {"writer": "write"}})
            assert refused.status_code == 409  # no writer: negotiated, refused, in a span
    finally:
        registry.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(registry.communicate(), 30)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    (discarded,) = [line for line in lines if line["msg"] == "traces discarded"]
    assert discarded["spans"] == 1


# --- one question through the whole team ------------------------------------------------------


@dataclass
class Team:
    registry_url: str
    urls: dict[str, str]
    exporter: InMemorySpanExporter


@pytest.fixture(scope="module")
async def team(
    redis_url: str, inference_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Team]:
    """Registry and the five agents in this process, the demo articles ingested."""
    common: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_prefix": new_prefix(),
        "data_dir": Path(tmp_path_factory.mktemp("traced")),
        "heartbeat_interval_s": 0.5,
        "heartbeat_ttl_s": 3.0,
    }
    parts = {
        "orchestrator": orchestrator_parts(OrchestratorSettings(**common)),
        "retriever": retriever_parts(RetrieverSettings(**common)),
        "writer": writer_parts(WriterSettings(**common)),
        "critic": critic_parts(CriticSettings(**common)),
        "inference": inference_parts(InferenceSettings(**common, inference_url=inference_url)),
    }
    with recording() as exporter:
        async with contextlib.AsyncExitStack() as stack:
            registry_url = await stack.enter_async_context(
                serve_app(create_app(RegistrySettings(**common)))
            )
            urls = {
                name: await stack.enter_async_context(
                    running_agent(parts[name], AgentSettings(**common))
                )
                for name in AGENT_NAMES
            }

            async def healthy() -> bool:
                async with httpx.AsyncClient(timeout=5) as http:
                    records = (await http.get(f"{registry_url}/agents")).json()
                return {r["name"] for r in records if r["state"] == "healthy"} >= set(urls)

            await wait_for(healthy, 300, "the five in-process agents registered and healthy")
            needed = {wiki_id(key) for key in DEMO_NEEDED}
            documents = [document_payload(d) for d in demo_documents() if d.id in needed]
            async with Peers.over_http(
                CommonSettings(), registry_url=registry_url, request_timeout_s=300
            ) as peers:
                report = await ingest_documents(
                    peers, documents, COLLECTION, max_bytes=4 * 1024 * 1024
                )
            assert report.ingested == len(documents) > 0
            yield Team(registry_url, urls, exporter)


async def ask_untraced(url: str, question: str) -> Answer:
    """Ask like a client that does not trace: the SDK's client, no trace context sent."""
    async with httpx.AsyncClient(timeout=300, headers={"A2A-Version": "1.0"}) as http:
        client = await create_client(url, client_config=ClientConfig(httpx_client=http))
        request = AnswerRequest(question=question, collection=COLLECTION, max_tokens=48)
        results: list[Any] = []
        async for event in client.send_message(skill_message("answer", request)):
            if event.HasField("artifact_update"):
                results += get_data_parts(list(event.artifact_update.artifact.parts))
    return Answer.model_validate(results[-1])


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_one_trace_spans_all_five_agents_of_one_question(team: Team) -> None:
    team.exporter.clear()
    answer = await ask_untraced(team.urls["orchestrator"], DEMO_QUESTIONS[0])
    spans = team.exporter.get_finished_spans()

    roots = [s for s in spans if s.parent is None]
    assert [r.name for r in roots] == ["invoke_agent orchestrator"], [r.name for r in roots]
    root = roots[0]
    trace_id = root.context.trace_id
    assert {s.context.trace_id for s in spans} == {trace_id}

    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = {s.context.span_id: s for s in spans if s.kind == SpanKind.CLIENT}
    assert {attributes(s)[telemetry.AGENT_NAME] for s in servers} == set(AGENT_NAMES)
    for server in servers:
        seen = attributes(server)
        assert seen[telemetry.CONVERSATION_ID] == answer.session_id, server.name
        assert seen[telemetry.TASK_STATE] == "TASK_STATE_COMPLETED", server.name
        if server is root:
            continue
        # Each hop's server span is the child of the caller's client span for that task.
        assert server.parent is not None
        caller = clients[server.parent.span_id]
        assert caller.name == server.name, (caller.name, server.name)
        assert attributes(caller)[telemetry.TASK_ID] == seen[telemetry.TASK_ID]
        assert attributes(caller)[telemetry.CONVERSATION_ID] == answer.session_id

    async with httpx.AsyncClient(timeout=10) as http:
        session = (await http.get(f"{team.registry_url}/sessions/{answer.session_id}")).json()
    assert session["trace_id"] == format(trace_id, "032x")

    by_id = {s.context.span_id: s for s in spans}

    def agent_of(span: ReadableSpan) -> str:
        parent = by_id[span.parent.span_id] if span.parent is not None else None
        return str(attributes(parent)[telemetry.AGENT_NAME]) if parent is not None else ""

    retrievals = [s for s in spans if s.name == f"retrieval {COLLECTION}"]
    assert retrievals
    for retrieval in retrievals:
        seen = attributes(retrieval)
        assert agent_of(retrieval) == "retriever"
        assert seen[telemetry.OPERATION] == "retrieval"
        assert seen[telemetry.DATA_SOURCE] == COLLECTION
        assert seen[telemetry.RETRIEVAL_QUERY]
        assert seen[telemetry.RETRIEVAL_HITS] > 0
    generations = [s for s in spans if s.name.startswith("chat ")]
    assert generations
    for generation in generations:
        seen = attributes(generation)
        assert agent_of(generation) == "inference"
        assert seen[telemetry.OPERATION] == "chat"
        assert seen[telemetry.INPUT_TOKENS] > 0
        assert seen[telemetry.OUTPUT_TOKENS] > 0
    writes = [s for s in servers if attributes(s)[telemetry.AGENT_NAME] == "writer"]
    assert any(attributes(w).get(telemetry.OUTPUT_TOKENS, 0) > 0 for w in writes)

    critiques = [s for s in servers if attributes(s)[telemetry.AGENT_NAME] == "critic"]
    assert critiques
    judged = []
    for critique in critiques:
        evaluations = [
            dict(e.attributes or {})
            for e in critique.events
            if e.name == telemetry.EVALUATION_RESULT
        ]
        by_name = {e[telemetry.EVALUATION_NAME]: e for e in evaluations}
        names = [e[telemetry.EVALUATION_NAME] for e in evaluations]
        assert names.count("critique") == names.count("coverage") == 1, names
        assert by_name["critique"][telemetry.EVALUATION_LABEL] in ("accept", "revise")
        sentences = [e for e in evaluations if e[telemetry.EVALUATION_NAME] == "sentence_support"]
        for sentence in sentences:
            assert 0.0 <= sentence[telemetry.EVALUATION_SCORE] <= 1.0
            assert sentence[telemetry.EVALUATION_LABEL]
        judged += sentences
    assert judged, "no sentence verdict recorded"


async def test_a_session_negotiated_over_http_takes_the_callers_trace(team: Team) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{team.registry_url}/sessions",
            json={"roles": {"retriever": "search"}},
            headers={"traceparent": traceparent},
        )
        assert response.status_code == 201, response.text
        session = response.json()
        await http.delete(f"{team.registry_url}/sessions/{session['id']}")
    assert session["trace_id"] == trace_id
