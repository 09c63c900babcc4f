"""A2A v1.0 conformance of the scaffold, over the real wire, on every transport.

One agent built with the scaffold (``conformance``: skills ``echo``, its primary one,
``typed`` and ``wait``) is walked through the specification's sections with the a2a-sdk
client on JSON-RPC, HTTP+JSON and gRPC alike: the agent card and its caching, SendMessage,
SendStreamingMessage, GetTask (historyLength), ListTasks (filters, paging), CancelTask,
SubscribeToTask, the errors each binding answers with (codes from the spec's table), version
negotiation, auth and message size on gRPC. Then the five real agents take a generic
client's plain text message on their primary skill, on every transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from a2a.client import Client
from a2a.client.errors import A2AClientError
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskState,
    a2a_pb2_grpc,
)
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from a2a.utils.grpc_status import status_from_call
from google.protobuf import json_format
from google.rpc import error_details_pb2
from pydantic import BaseModel, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from agents.critic.agent import CriticSettings
from agents.critic.agent import parts as critic_parts
from agents.inference.agent import parts as inference_parts
from agents.inference.settings import InferenceSettings
from agents.orchestrator.agent import OrchestratorSettings
from agents.orchestrator.agent import parts as orchestrator_parts
from agents.retriever.agent import parts as retriever_parts
from agents.retriever.settings import RetrieverSettings
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import SkillCall
from agents.scaffold.settings import AgentSettings
from agents.writer.agent import WriterSettings
from agents.writer.agent import parts as writer_parts
from protocol.cards import (
    CARD_PATH,
    JSONRPC_PATH,
    REST_PATH,
    CardError,
    CardSpec,
    Skill,
    build_agent_card,
    card_base_url,
    card_from_dict,
    card_to_dict,
    validate_card,
)
from protocol.client import TRANSPORTS, http_client, open_client, skill_message, task_data
from registry.directory import Registry
from registry.keys import RedisKeys
from registry.settings import RegistrySettings
from scriptorium.launcher import free_port
from scriptorium.testing import running_agent, serve_app, wait_for

# --- the conformance agent -------------------------------------------------------------------

RELEASE = asyncio.Event()


class Greeting(BaseModel):
    """What skill ``typed`` takes: a data part only."""

    name: str


async def echo(call: SkillCall) -> None:
    await call.progress("echoing")
    await call.emit({"echo": call.data()})


async def typed(call: SkillCall) -> None:
    await call.emit({"hello": call.parse(Greeting).name})


async def wait(call: SkillCall) -> None:
    await call.progress("waiting")
    await RELEASE.wait()
    await call.emit({"released": True})


CONFORMANCE = AgentParts(
    card=CardSpec(
        name="conformance",
        description="The scaffold's A2A surface, with three small skills.",
        version="1.2.3",
        skills=[
            Skill(
                "echo",
                "Echo",
                "Echoes its text or data.",
                tags=["test"],
                examples=["hello"],
                input_modes=("application/json", "text/plain"),
                output_modes=("application/json",),
            ),
            Skill(
                "typed",
                "Greet",
                "Takes a Greeting data part.",
                tags=["test"],
                input_modes=("application/json",),
                output_modes=("application/json",),
            ),
            Skill(
                "wait",
                "Wait",
                "Runs until the test releases it.",
                tags=["test"],
                input_modes=("application/json",),
                output_modes=("application/json",),
            ),
        ],
        primary_skill="echo",
    ),
    handlers={"echo": echo, "typed": typed, "wait": wait},
)


@pytest.fixture
def settings(redis_url: str, redis_prefix: str) -> AgentSettings:
    return AgentSettings(
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        heartbeat_interval_s=0.5,
        max_request_bytes=64 * 1024,
        graceful_shutdown_s=2,
    )


@pytest.fixture
async def agent(settings: AgentSettings) -> AsyncIterator[str]:
    async with running_agent(CONFORMANCE, settings) as url:
        yield url


@pytest.fixture
async def card(agent: str, a2a_http: httpx.AsyncClient) -> AgentCard:
    return card_from_dict((await a2a_http.get(agent + CARD_PATH)).json())


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(agent: str, a2a_http: httpx.AsyncClient, transport: str) -> Client:
    """A streaming SDK client of the conformance agent on ``transport``."""
    return await open_client(agent, a2a_http, transport=transport)


@pytest.fixture
async def unary(agent: str, a2a_http: httpx.AsyncClient, transport: str) -> Client:
    """A non-streaming SDK client (SendMessage, not SendStreamingMessage) on ``transport``."""
    return await open_client(agent, a2a_http, transport=transport, streaming=False)


def text_message(text: str, **fields: Any) -> SendMessageRequest:
    """What a generic A2A client sends: one text part, no metadata, no skill."""
    message = Message(
        role=Role.ROLE_USER, parts=[Part(text=text)], message_id=uuid.uuid4().hex, **fields
    )
    return SendMessageRequest(message=message)


async def send(client: Client, request: SendMessageRequest) -> Task:
    """SendMessage through a non-streaming client: the task it answers with."""
    answers = [event async for event in client.send_message(request)]
    assert len(answers) == 1, answers
    assert answers[0].HasField("task"), answers
    return answers[0].task


def reason(task: Task) -> str:
    return " ".join(part.text for part in task.status.message.parts)


# --- agent card ------------------------------------------------------------------------------


async def test_card_declares_the_three_interfaces_and_the_skills_modes(
    agent: str, card: AgentCard
) -> None:
    validate_card(card)
    assert (card.name, card.version) == ("conformance", "1.2.3")
    assert card.provider.organization == "Scriptorium"
    interfaces = [
        (i.protocol_binding, i.url, i.protocol_version) for i in card.supported_interfaces
    ]
    assert interfaces[:2] == [
        ("JSONRPC", agent + JSONRPC_PATH, "1.0"),
        ("HTTP+JSON", agent + REST_PATH, "1.0"),
    ]
    binding, grpc_url, version = interfaces[2]
    assert (binding, version) == ("GRPC", "1.0")
    assert urlsplit(grpc_url).hostname == urlsplit(agent).hostname
    assert urlsplit(grpc_url).port == urlsplit(agent).port, "one origin for every interface"
    assert card.capabilities.streaming
    modes = {s.id: (list(s.input_modes), list(s.output_modes)) for s in card.skills}
    assert modes == {
        "echo": (["application/json", "text/plain"], ["application/json"]),
        "typed": (["application/json"], ["application/json"]),
        "wait": (["application/json"], ["application/json"]),
    }


async def test_card_is_cacheable_and_revalidated(agent: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        first = await http.get(agent + CARD_PATH)
        assert first.status_code == 200
        assert first.headers["cache-control"] == "public, max-age=60"
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        built = parsedate_to_datetime(modified)
        assert datetime.now(UTC) - timedelta(minutes=5) < built <= datetime.now(UTC)

        same = await http.get(agent + CARD_PATH, headers={"If-None-Match": etag})
        assert same.status_code == 304
        assert same.content == b""
        assert same.headers["etag"] == etag
        assert same.headers["last-modified"] == modified

        unchanged = await http.get(agent + CARD_PATH, headers={"If-Modified-Since": modified})
        assert unchanged.status_code == 304
        assert unchanged.headers["cache-control"] == "public, max-age=60"
        before = format_datetime(built - timedelta(days=1), usegmt=True)
        changed = await http.get(agent + CARD_PATH, headers={"If-Modified-Since": before})
        assert changed.status_code == 200
        assert changed.json() == first.json()
        # If-None-Match decides alone when both are sent (RFC 9110 13.1.3).
        other = await http.get(
            agent + CARD_PATH, headers={"If-None-Match": 'W/"other"', "If-Modified-Since": modified}
        )
        assert other.status_code == 200


async def test_the_registry_keeps_the_card_with_its_three_interfaces(
    agent: str, settings: AgentSettings, redis: aioredis.Redis, redis_prefix: str
) -> None:
    registry = Registry(
        redis, RegistrySettings(**settings.model_dump()), keys=RedisKeys(redis_prefix)
    )
    registered = lambda: httpx.get(agent + "/healthz").json()["registered"]  # noqa: E731
    await wait_for(registered, 10, "the agent did not register")
    found = await registry.discover(skill="echo")
    bindings = [i["protocolBinding"] for i in found[0].card["supportedInterfaces"]]
    assert bindings == ["JSONRPC", "HTTP+JSON", "GRPC"]
    assert found[0].url == agent


def test_a_grpc_port_of_its_own_is_a_valid_card_but_http_ports_must_agree() -> None:
    spec = CONFORMANCE.card
    card = build_agent_card(spec, "http://127.0.0.1:9000", grpc_url="http://127.0.0.1:9001")
    validate_card(card)
    grpc_first = card_from_dict(card_to_dict(card))
    grpc_first.supported_interfaces.insert(0, grpc_first.supported_interfaces.pop())
    assert card_base_url(grpc_first) == "http://127.0.0.1:9000"
    elsewhere = card_from_dict(card_to_dict(card))
    elsewhere.supported_interfaces[1].url = "http://127.0.0.1:9002/a2a/rest"
    with pytest.raises(CardError, match="its HTTP ones one port"):
        validate_card(elsewhere)
    other_host = card_from_dict(card_to_dict(card))
    other_host.supported_interfaces[2].url = "http://10.0.0.9:9001"
    with pytest.raises(CardError, match="one host"):
        validate_card(other_host)


async def test_grpc_on_a_port_of_its_own_when_one_is_set(
    settings: AgentSettings, a2a_http: httpx.AsyncClient
) -> None:
    apart = settings.model_copy(update={"grpc_port": free_port()})
    async with running_agent(CONFORMANCE, apart) as url:
        client = await open_client(url, a2a_http, transport="GRPC", streaming=False)
        task = await send(client, skill_message("echo", {"n": 2}))
        card = card_from_dict((await a2a_http.get(url + CARD_PATH)).json())
    assert task_data(task) == [{"echo": {"n": 2}}]
    assert card.supported_interfaces[2].url == f"http://127.0.0.1:{apart.grpc_port}"


# --- operations, through the SDK client on each transport -----------------------------------


async def test_send_message_answers_with_the_completed_task(unary: Client) -> None:
    task = await send(unary, skill_message("echo", {"n": 1}))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.id
    assert task.context_id
    assert task_data(task) == [{"echo": {"n": 1}}]
    assert task.history[0].role == Role.ROLE_USER


async def test_send_streaming_message_streams_the_task_to_its_end(client: Client) -> None:
    events = [event async for event in client.send_message(skill_message("echo", "hi"))]
    kinds = [event.WhichOneof("payload") for event in events]
    assert kinds[0] == "task"
    assert "artifact_update" in kinds
    states = [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert TaskState.TASK_STATE_WORKING in states
    assert states[-1] == TaskState.TASK_STATE_COMPLETED
    assert kinds[-1] == "status_update"
    assert {e.status_update.task_id for e in events if e.HasField("status_update")} == {
        events[0].task.id
    }


async def test_get_task_honours_history_length(unary: Client) -> None:
    task = await send(unary, skill_message("echo", "remember"))
    full = await unary.get_task(GetTaskRequest(id=task.id))
    assert full.history[0].parts[0].text == "remember"
    assert len(full.history) >= 2  # the request, then the "echoing" progress message
    last = await unary.get_task(GetTaskRequest(id=task.id, history_length=1))
    assert list(last.history) == [full.history[-1]]
    none = await unary.get_task(GetTaskRequest(id=task.id, history_length=0))
    assert list(none.history) == []
    assert none.status.state == TaskState.TASK_STATE_COMPLETED


async def test_list_tasks_filters_by_context_and_status_and_pages(unary: Client) -> None:
    context = uuid.uuid4().hex
    made = [await send(unary, skill_message("echo", str(i), context_id=context)) for i in "abc"]
    await send(unary, skill_message("echo", "elsewhere"))
    listed = await unary.list_tasks(ListTasksRequest(context_id=context))
    assert {t.id for t in listed.tasks} == {t.id for t in made}
    assert listed.next_page_token == ""
    assert all(not t.artifacts for t in listed.tasks)  # includeArtifacts defaults to false

    first = await unary.list_tasks(ListTasksRequest(context_id=context, page_size=2))
    assert len(first.tasks) == 2
    assert first.next_page_token
    rest = await unary.list_tasks(
        ListTasksRequest(context_id=context, page_size=2, page_token=first.next_page_token)
    )
    assert {t.id for t in first.tasks} | {t.id for t in rest.tasks} == {t.id for t in made}
    assert rest.next_page_token == ""

    completed = await unary.list_tasks(
        ListTasksRequest(
            context_id=context, status=TaskState.TASK_STATE_COMPLETED, include_artifacts=True
        )
    )
    assert len(completed.tasks) == 3
    assert all(task_data(t) for t in completed.tasks)
    working = await unary.list_tasks(
        ListTasksRequest(context_id=context, status=TaskState.TASK_STATE_WORKING)
    )
    assert list(working.tasks) == []


async def test_cancel_of_a_finished_task_is_refused(unary: Client) -> None:
    task = await send(unary, skill_message("echo", "done"))
    with pytest.raises(TaskNotCancelableError):
        await unary.cancel_task(CancelTaskRequest(id=task.id))
    stored = await unary.get_task(GetTaskRequest(id=task.id))
    assert stored.status.state == TaskState.TASK_STATE_COMPLETED


async def test_subscribe_follows_a_running_task_to_its_end(unary: Client, client: Client) -> None:
    RELEASE.clear()
    request = skill_message("wait", {})
    request.configuration.return_immediately = True
    started = await send(unary, request)
    assert started.status.state not in (TaskState.TASK_STATE_COMPLETED,)
    events = []
    async for event in client.subscribe(SubscribeToTaskRequest(id=started.id)):
        events.append(event)
        if len(events) == 1:
            assert event.HasField("task")
            assert event.task.id == started.id
            RELEASE.set()
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_subscribe_to_a_finished_or_unknown_task_is_an_error(
    unary: Client, client: Client
) -> None:
    task = await send(unary, skill_message("echo", "done"))
    with pytest.raises(UnsupportedOperationError):
        [event async for event in client.subscribe(SubscribeToTaskRequest(id=task.id))]
    with pytest.raises(TaskNotFoundError):
        [event async for event in client.subscribe(SubscribeToTaskRequest(id="no-such-task"))]


async def test_errors_reach_the_sdk_client_as_the_same_exceptions(unary: Client) -> None:
    with pytest.raises(TaskNotFoundError):
        await unary.get_task(GetTaskRequest(id="no-such-task"))
    with pytest.raises(InvalidParamsError):
        await unary.list_tasks(ListTasksRequest(page_size=1000))
    image = skill_message("echo", "x")
    image.message.parts[0].media_type = "image/png"
    with pytest.raises(ContentTypeNotSupportedError, match="skill 'echo' of conformance"):
        await send(unary, image)
    # text/plain is in the card (echo takes it) but not a mode of the skill requested
    text = skill_message("typed", "x")
    text.message.parts[0].media_type = "text/plain"
    with pytest.raises(ContentTypeNotSupportedError, match="send one of: application/json"):
        await send(unary, text)


async def test_plain_text_goes_to_the_primary_skill(unary: Client) -> None:
    task = await send(unary, text_message("hello there"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED, reason(task)
    assert task_data(task) == [{"echo": "hello there"}]
    typed_text = await send(unary, skill_message("typed", "Ada"))
    assert typed_text.status.state == TaskState.TASK_STATE_REJECTED
    assert reason(typed_text).startswith(
        "skill 'typed' takes a data part (application/json) holding a Greeting "
        '{"name": string}, not text'
    )
    greeted = await send(unary, skill_message("typed", {"name": "Ada"}))
    assert task_data(greeted) == [{"hello": "Ada"}]


# --- the wire: each binding's error codes ----------------------------------------------------

#: A2A error reason -> (JSON-RPC code, gRPC status, HTTP status). The spec's table (v1.0,
#: section 5.4) for JSON-RPC and HTTP; gRPC as a2a-sdk 1.3 maps them.
ERRORS: dict[str, tuple[int, str, int]] = {
    "TASK_NOT_FOUND": (-32001, "NOT_FOUND", 404),
    "TASK_NOT_CANCELABLE": (-32002, "FAILED_PRECONDITION", 409),
    "UNSUPPORTED_OPERATION": (-32004, "FAILED_PRECONDITION", 400),
    "CONTENT_TYPE_NOT_SUPPORTED": (-32005, "INVALID_ARGUMENT", 415),
    "VERSION_NOT_SUPPORTED": (-32009, "FAILED_PRECONDITION", 400),
    "INVALID_PARAMS": (-32602, "INVALID_ARGUMENT", 400),
}
GRPC_REQUESTS: dict[str, type[Any]] = {
    "SendMessage": SendMessageRequest,
    "SendStreamingMessage": SendMessageRequest,
    "GetTask": GetTaskRequest,
    "ListTasks": ListTasksRequest,
    "CancelTask": CancelTaskRequest,
    "SubscribeToTask": SubscribeToTaskRequest,
}
STREAMING = {"SendStreamingMessage", "SubscribeToTask"}


@dataclass(frozen=True)
class Refusal:
    """How a binding refused a call: its own code, and the A2A reason (ErrorInfo)."""

    code: int | str
    reason: str


def _rest(method: str, params: dict[str, Any]) -> tuple[str, str, dict[str, Any], Any]:
    """HTTP verb, path, query and body of an A2A method on the HTTP+JSON binding."""
    rest = {k: v for k, v in params.items() if k != "id"}
    task = f"/tasks/{params.get('id', '')}"
    return {
        "SendMessage": ("POST", "/message:send", {}, params),
        "SendStreamingMessage": ("POST", "/message:stream", {}, params),
        "GetTask": ("GET", task, rest, None),
        "ListTasks": ("GET", "/tasks", rest, None),
        "CancelTask": ("POST", task + ":cancel", {}, {}),
        "SubscribeToTask": ("POST", task + ":subscribe", {}, {}),
    }[method]


def _first_json(response: httpx.Response) -> Any:
    """The body, or the first event of an SSE body."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        line = next(x for x in response.text.splitlines() if x.startswith("data:"))
        return json.loads(line[5:])
    return response.json()


async def refusal(
    card: AgentCard, transport: str, method: str, params: dict[str, Any], version: str | None
) -> Refusal:
    """Call ``method`` on the raw wire of ``transport``; how it was refused."""
    urls = {i.protocol_binding: i.url for i in card.supported_interfaces}
    headers = {"A2A-Version": version} if version else {}
    if transport == "GRPC":
        request = json_format.ParseDict(params, GRPC_REQUESTS[method]())
        metadata = [("a2a-version", version)] if version else []
        async with grpc.aio.insecure_channel(urlsplit(urls["GRPC"]).netloc) as channel:
            call = getattr(a2a_pb2_grpc.A2AServiceStub(channel), method)
            try:
                if method in STREAMING:
                    [item async for item in call(request, metadata=metadata, timeout=10)]
                else:
                    await call(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                status = status_from_call(exc)
                info = error_details_pb2.ErrorInfo()
                found = status is not None and any(d.Unpack(info) for d in status.details)
                return Refusal(exc.code().name, info.reason if found else "")
        raise AssertionError(f"gRPC {method} succeeded")
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        if transport == "JSONRPC":
            body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
            response = await http.post(urls["JSONRPC"], json=body)
            assert response.status_code == 200, response.text
            error = _first_json(response)["error"]
            return Refusal(error["code"], error.get("data", [{}])[0].get("reason", ""))
        verb, path, query, content = _rest(method, params)
        response = await http.request(verb, urls["HTTP+JSON"] + path, params=query, json=content)
        error = _first_json(response)["error"]
        assert error["code"] == response.status_code
        return Refusal(response.status_code, error["details"][0]["reason"])


def _message(skill: str, text: str, media_type: str = "", **fields: Any) -> dict[str, Any]:
    request = skill_message(skill, text)
    request.message.parts[0].media_type = media_type
    for name, value in fields.items():
        setattr(request.message, name, value)
    params: dict[str, Any] = json_format.MessageToDict(request)
    return params


@pytest.fixture
async def finished(agent: str, a2a_http: httpx.AsyncClient) -> str:
    """The id of a completed task."""
    task = await send(await open_client(agent, a2a_http, streaming=False), text_message("x"))
    return task.id


CASES: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
    ("GetTask", lambda done: {"id": "no-such-task"}, "TASK_NOT_FOUND"),
    ("GetTask", lambda done: {"id": done, "historyLength": -1}, "INVALID_PARAMS"),
    ("ListTasks", lambda done: {"pageSize": 1000}, "INVALID_PARAMS"),
    ("CancelTask", lambda done: {"id": done}, "TASK_NOT_CANCELABLE"),
    ("CancelTask", lambda done: {"id": "no-such-task"}, "TASK_NOT_FOUND"),
    ("SubscribeToTask", lambda done: {"id": done}, "UNSUPPORTED_OPERATION"),
    ("SubscribeToTask", lambda done: {"id": "no-such-task"}, "TASK_NOT_FOUND"),
    ("SendMessage", lambda done: _message("echo", "x", "image/png"), "CONTENT_TYPE_NOT_SUPPORTED"),
    (
        "SendStreamingMessage",
        lambda done: _message("typed", "x", "text/plain"),
        "CONTENT_TYPE_NOT_SUPPORTED",
    ),
    ("SendMessage", lambda done: _message("echo", "x", task_id="nope"), "TASK_NOT_FOUND"),
]


@pytest.mark.parametrize(
    ("method", "params", "reason_"), CASES, ids=[f"{m}-{r}" for m, _, r in CASES]
)
async def test_each_binding_answers_the_error_code_of_the_spec(
    card: AgentCard,
    finished: str,
    transport: str,
    method: str,
    params: Callable[[str], dict[str, Any]],
    reason_: str,
) -> None:
    refused = await refusal(card, transport, method, params(finished), version="1.0")
    assert refused == expected(transport, reason_)


@pytest.mark.parametrize("version", ["0.3", "2.0", None])
async def test_an_unsupported_a2a_version_is_refused(
    card: AgentCard, transport: str, version: str | None
) -> None:
    # Version 1.0 gets as far as the task lookup; anything else (none means 0.3) does not.
    accepted = await refusal(card, transport, "GetTask", {"id": "x"}, "1.0")
    assert accepted == expected(transport, "TASK_NOT_FOUND")
    refused = await refusal(card, transport, "GetTask", {"id": "x"}, version)
    assert refused == expected(transport, "VERSION_NOT_SUPPORTED")


def expected(transport: str, reason_: str) -> Refusal:
    """The refusal the spec's table prescribes for ``reason_`` on ``transport``."""
    jsonrpc, grpc_status, http_status = ERRORS[reason_]
    codes: dict[str, int | str] = {
        "JSONRPC": jsonrpc,
        "GRPC": grpc_status,
        "HTTP+JSON": http_status,
    }
    return Refusal(codes[transport], reason_)


async def test_json_rpc_specific_errors(agent: str, a2a_http: httpx.AsyncClient) -> None:
    async def rpc(body: bytes) -> dict[str, Any]:
        response = await a2a_http.post(
            agent + JSONRPC_PATH, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200
        error: dict[str, Any] = response.json()["error"]
        return error

    assert (await rpc(b"{not json"))["code"] == -32700
    assert (await rpc(b'{"jsonrpc": "2.0", "id": 1}'))["code"] == -32600
    unknown = b'{"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "x"}}'
    assert (await rpc(unknown))["code"] == -32601
    wrong = b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": 7}}'
    assert (await rpc(wrong))["code"] in (-32602, -32600)


async def test_http_json_specific_errors(agent: str, a2a_http: httpx.AsyncClient) -> None:
    malformed = await a2a_http.post(
        agent + REST_PATH + "/message:send",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["details"][0]["reason"] == "INVALID_REQUEST"
    assert (await a2a_http.get(agent + REST_PATH + "/no-such-resource")).status_code == 404


# --- gRPC: same auth and size limit as HTTP --------------------------------------------------


async def test_grpc_wants_the_same_token_as_http(
    settings: AgentSettings, a2a_http: httpx.AsyncClient
) -> None:
    secured = settings.model_copy(update={"token": SecretStr("s3cret")})
    async with running_agent(CONFORMANCE, secured) as url:
        assert (await a2a_http.get(url + CARD_PATH)).status_code == 200  # the card stays open
        anonymous = await open_client(url, a2a_http, transport="GRPC", streaming=False)
        with pytest.raises(A2AClientError, match="UNAUTHENTICATED"):
            await anonymous.get_task(GetTaskRequest(id="x"))
        async with http_client(headers={"Authorization": "Bearer s3cret"}) as authed:
            for transport in TRANSPORTS:
                client = await open_client(url, authed, transport=transport, streaming=False)
                task = await send(client, text_message(f"via {transport}"))
                assert task_data(task) == [{"echo": f"via {transport}"}]


async def test_grpc_refuses_messages_larger_than_max_request_bytes(
    card: AgentCard, settings: AgentSettings
) -> None:
    target = urlsplit(
        next(i.url for i in card.supported_interfaces if i.protocol_binding == "GRPC")
    )
    request = skill_message("echo", "x" * (settings.max_request_bytes + 1))
    async with grpc.aio.insecure_channel(target.netloc) as channel:
        stub = a2a_pb2_grpc.A2AServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendMessage(request, metadata=[("a2a-version", "1.0")], timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_one_task_is_the_same_task_on_every_transport(
    agent: str, a2a_http: httpx.AsyncClient
) -> None:
    clients = {
        t: await open_client(agent, a2a_http, transport=t, streaming=False) for t in TRANSPORTS
    }
    task = await send(clients["GRPC"], text_message("shared"))
    for client in clients.values():
        seen = await client.get_task(GetTaskRequest(id=task.id))
        assert task_data(seen) == [{"echo": "shared"}]


# --- the five agents take a generic client's text on their primary skill ---------------------


def _echo_engine() -> Starlette:
    """An OpenAI-compatible engine whose completion is the JSON of the chat it was sent."""

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        chunk = {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": json.dumps(body["messages"])},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        }

        async def stream() -> AsyncIterator[str]:
            yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


@contextlib.asynccontextmanager
async def real_agent(name: str, common: dict[str, Any], tmp_path: Path) -> AsyncIterator[str]:
    """One of the five agents, in this process, on its own Redis keys; yields its URL."""
    if name == "retriever":
        retriever = RetrieverSettings(**common, data_dir=tmp_path)
        async with running_agent(retriever_parts(retriever), retriever) as url:
            yield url
    elif name == "inference":
        async with serve_app(_echo_engine()) as engine:
            inference = InferenceSettings(**common, inference_url=engine + "/v1")
            async with running_agent(inference_parts(inference), inference) as url:
                healthy = lambda: httpx.get(url + "/healthz").status_code == 200  # noqa: E731
                await wait_for(healthy, 10, "the inference agent did not see its engine")
                yield url
    elif name == "orchestrator":
        orchestrator = OrchestratorSettings(**common)
        async with running_agent(orchestrator_parts(orchestrator), orchestrator) as url:
            yield url
    elif name == "writer":
        writer = WriterSettings(**common)
        async with running_agent(writer_parts(writer), writer) as url:
            yield url
    else:
        critic = CriticSettings(**common)
        async with running_agent(critic_parts(critic), critic) as url:
            yield url


@pytest.fixture
def common(redis_url: str, redis_prefix: str) -> dict[str, Any]:
    return {"redis_url": redis_url, "redis_prefix": redis_prefix, "heartbeat_interval_s": 0.5}


async def on_every_transport(url: str, http: httpx.AsyncClient, text: str) -> list[Task]:
    """The task a plain text message gets on each transport."""
    tasks = []
    for transport in TRANSPORTS:
        client = await open_client(url, http, transport=transport, streaming=False)
        tasks.append(await send(client, text_message(text)))
    return tasks


async def test_text_searches_the_retriever(
    common: dict[str, Any], tmp_path: Path, a2a_http: httpx.AsyncClient
) -> None:
    async with real_agent("retriever", common, tmp_path) as url:
        tasks = await on_every_transport(url, a2a_http, "bees")
    for task in tasks:
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, reason(task)
        assert task_data(task)[-1] == {"query": "bees", "passages": []}


async def test_text_is_one_user_turn_for_inference(
    common: dict[str, Any], tmp_path: Path, a2a_http: httpx.AsyncClient
) -> None:
    async with real_agent("inference", common, tmp_path) as url:
        tasks = await on_every_transport(url, a2a_http, "Hi")
    for task in tasks:
        assert task.status.state == TaskState.TASK_STATE_COMPLETED, reason(task)
        generation = task_data(task)[-1]
        assert json.loads(generation["text"]) == [{"role": "user", "content": "Hi"}]


async def test_text_is_the_orchestrators_question(
    common: dict[str, Any], tmp_path: Path, a2a_http: httpx.AsyncClient
) -> None:
    async with real_agent("orchestrator", common, tmp_path) as url:
        tasks = await on_every_transport(url, a2a_http, "Who lays the eggs?")
    for task in tasks:
        # Taken as the question: it then fails for want of a team, not for its input.
        assert task.status.state == TaskState.TASK_STATE_FAILED, reason(task)
        assert "cannot start a session" in reason(task)


@pytest.mark.parametrize(
    ("agent_name", "skill", "needs"),
    [
        (
            "writer",
            "write",
            "skill 'write' takes a data part (application/json) holding a WriteRequest "
            '{"question": string, "passages": [Passage, ...]}',
        ),
        (
            "critic",
            "critique",
            "skill 'critique' takes a data part (application/json) holding a CritiqueRequest "
            '{"question": string, "draft": Draft, "passages": [Passage, ...]}',
        ),
    ],
)
async def test_text_to_writer_and_critic_is_rejected_naming_the_data_part(
    common: dict[str, Any],
    tmp_path: Path,
    a2a_http: httpx.AsyncClient,
    agent_name: str,
    skill: str,
    needs: str,
) -> None:
    async with real_agent(agent_name, common, tmp_path) as url:
        tasks = await on_every_transport(url, a2a_http, "hi")
    for task in tasks:
        assert task.status.state == TaskState.TASK_STATE_REJECTED
        said = reason(task)
        assert said.startswith(needs), said
        assert 'Passage being {"chunk_id": string, "document_id": string' in said
        assert f'message metadata {{"skill": "{skill}"}}' in said
