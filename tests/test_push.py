"""Push notifications end to end: a real agent, the SDK client over both bindings, real webhooks."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from a2a.client import Client, ClientConfig, create_client
from a2a.server.context import ServerCallContext
from a2a.types import (
    AuthenticationInfo,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import InvalidParamsError
from a2a.utils.push_url_validator import validate_push_notification_url
from google.protobuf.json_format import ParseDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agents.scaffold.app import AgentParts, create_agent_app
from agents.scaffold.executor import SkillCall
from agents.scaffold.push.configs import RedisPushConfigStore
from agents.scaffold.push.sender import EVENT_ID_HEADER, TOKEN_HEADER, PushSender, RetryPolicy
from agents.scaffold.push.urls import PushUrlPolicy
from agents.scaffold.settings import AgentSettings
from agents.scaffold.tasks.events import owner_context
from protocol.cards import CARD_PATH, CardSpec, Skill
from protocol.client import call_skill, skill_message
from protocol.http import bind_socket, serving, socket_url
from registry.keys import RedisKeys
from scriptorium.testing import running_agent, serve_app, wait_for

COMPLETED = "TASK_STATE_COMPLETED"
#: What ``echo`` pushes: the new task, working, its artifact, completed.
UPDATES = ["task", "statusUpdate", "artifactUpdate", "statusUpdate"]


GATE: dict[str, asyncio.Event] = {}


async def echo(call: SkillCall) -> None:
    await call.emit({"echo": call.data()})


async def gated(call: SkillCall) -> None:
    """Wait until the test opens the gate named in the request, then answer."""
    await GATE[str(call.data()["gate"])].wait()
    await call.emit({"opened": True})


PUSHER = AgentParts(
    card=CardSpec(
        name="pusher",
        description="Test agent for push notifications.",
        skills=[
            Skill(id=name, name=name, description=name, tags=["test"]) for name in ("echo", "gated")
        ],
        primary_skill="echo",
    ),
    handlers={"echo": echo, "gated": gated},
)


@dataclass
class Hit:
    """One POST a webhook received."""

    hook: str
    event_id: str
    token: str | None
    authorization: str | None
    body: dict[str, Any]
    at: float
    status: int


class Receiver:
    """Webhooks at ``/{name}``: ``ok`` accepts, ``flaky`` answers 500 twice per update first,
    ``hang`` does not answer until the test ends."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.release = asyncio.Event()
        self.url = ""

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{name}", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        tries = sum(1 for hit in self.hits if hit.hook == name and hit.event_id == event_id)
        status = 500 if name == "flaky" and tries < 2 else 200
        hit = Hit(
            hook=name,
            event_id=event_id,
            token=request.headers.get(TOKEN_HEADER),
            authorization=request.headers.get("Authorization"),
            body=await request.json(),
            at=time.monotonic(),
            status=status,
        )
        self.hits.append(hit)
        if name == "hang":
            await self.release.wait()
        return Response(status_code=status)

    def accepted(self, hook: str) -> list[Hit]:
        """Accepted updates of a webhook, duplicates (same event id) dropped, in order."""
        seen: set[str] = set()
        kept = []
        for hit in self.hits:
            if hit.hook == hook and hit.status == 200 and hit.event_id not in seen:
                seen.add(hit.event_id)
                kept.append(hit)
        return kept

    def completed(self, hook: str) -> bool:
        return any(_state(hit.body) == COMPLETED for hit in self.accepted(hook))


def _kind(body: dict[str, Any]) -> str:
    (kind,) = body.keys()
    return kind


def _state(body: dict[str, Any]) -> str | None:
    state = body.get("statusUpdate", {}).get("status", {}).get("state")
    return None if state is None else str(state)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    async with serve_app(hooks.app()) as url:
        hooks.url = url
        try:
            yield hooks
        finally:
            hooks.release.set()


@pytest.fixture
def settings(agent_settings: AgentSettings) -> AgentSettings:
    return AgentSettings(
        **agent_settings.model_dump(exclude_unset=True),
        push_allowed_hosts=["127.0.0.1"],
        push_backoff_s=0.1,
        push_timeout_s=2.0,
        push_max_attempts=4,
        push_drain_s=2.0,
        push_max_configs_per_task=3,
    )


@pytest.fixture
async def agent(settings: AgentSettings) -> AsyncIterator[str]:
    async with running_agent(PUSHER, settings) as url:
        yield url


async def _client(url: str, http: httpx.AsyncClient, binding: str = "JSONRPC") -> Client:
    config = ClientConfig(httpx_client=http, supported_protocol_bindings=[binding])
    return await create_client(url, client_config=config)


def _config(url: str, config_id: str = "", token: str = "") -> TaskPushNotificationConfig:
    return TaskPushNotificationConfig(id=config_id, url=url, token=token)


async def _send(client: Client, config: TaskPushNotificationConfig) -> Task:
    """Run ``echo`` with a push config in SendMessage's configuration; the finished task."""
    request = skill_message("echo", {"n": 1})
    request.configuration.task_push_notification_config.CopyFrom(config)
    task = Task()
    async for event in client.send_message(request):
        if event.HasField("task"):
            task = event.task
        elif event.HasField("status_update"):
            task.status.CopyFrom(event.status_update.status)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    return task


async def test_the_card_advertises_push_notifications(
    agent: str, a2a_http: httpx.AsyncClient
) -> None:
    card = (await a2a_http.get(agent + CARD_PATH)).json()
    assert card["capabilities"]["pushNotifications"] is True


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_configs_are_created_read_listed_and_deleted(
    agent: str,
    receiver: Receiver,
    a2a_http: httpx.AsyncClient,
    redis: aioredis.Redis,
    redis_prefix: str,
    settings: AgentSettings,
    binding: str,
) -> None:
    client = await _client(agent, a2a_http, binding)
    task = await call_skill(client, "echo", "hello")
    first = _config(receiver.url + "/ok", "c1", token="tok-1")
    first.authentication.CopyFrom(AuthenticationInfo(scheme="Bearer", credentials="abc"))
    first.task_id = task.id
    created = await client.create_task_push_notification_config(first)
    assert (created.id, created.task_id, created.url) == ("c1", task.id, first.url)
    second = _config(receiver.url + "/ok", "c2")
    second.task_id = task.id
    await client.create_task_push_notification_config(second)

    got = await client.get_task_push_notification_config(
        GetTaskPushNotificationConfigRequest(task_id=task.id, id="c1")
    )
    assert got == created
    listed = await client.list_task_push_notification_configs(
        ListTaskPushNotificationConfigsRequest(task_id=task.id)
    )
    assert [c.id for c in listed.configs] == ["c1", "c2"]

    key = RedisKeys(redis_prefix).push_configs("pusher", task.id)
    assert 0 < await redis.pttl(key) <= settings.task_retention_s * 1000

    await client.delete_task_push_notification_config(
        DeleteTaskPushNotificationConfigRequest(task_id=task.id, id="c1")
    )
    listed = await client.list_task_push_notification_configs(
        ListTaskPushNotificationConfigsRequest(task_id=task.id)
    )
    assert [c.id for c in listed.configs] == ["c2"]
    with pytest.raises(Exception, match=r"(?i)not found"):
        await client.get_task_push_notification_config(
            GetTaskPushNotificationConfigRequest(task_id=task.id, id="c1")
        )


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_a_config_in_send_message_gets_every_update_in_order_with_its_token(
    agent: str, receiver: Receiver, a2a_http: httpx.AsyncClient, binding: str
) -> None:
    client = await _client(agent, a2a_http, binding)
    config = _config(receiver.url + "/ok", token="secret-token")
    config.authentication.CopyFrom(AuthenticationInfo(scheme="Bearer", credentials="abc"))
    task = await _send(client, config)
    await wait_for(lambda: receiver.completed("ok"), 10, "the webhook got no completed update")

    hits = receiver.accepted("ok")
    assert [_kind(h.body) for h in hits] == UPDATES
    assert [_state(h.body) for h in hits][-1] == COMPLETED
    assert {h.token for h in hits} == {"secret-token"}
    assert {h.authorization for h in hits} == {"Bearer abc"}
    assert len({h.event_id for h in hits}) == len(hits) == len(receiver.hits)
    for hit in hits:
        update = ParseDict(hit.body, StreamResponse())
        payload = getattr(update, update.WhichOneof("payload") or "task")
        assert task.id in (getattr(payload, "id", ""), getattr(payload, "task_id", ""))


async def test_a_config_set_on_another_replica_reaches_the_task_running_here(
    settings: AgentSettings, receiver: Receiver, a2a_http: httpx.AsyncClient
) -> None:
    GATE["g1"] = asyncio.Event()
    other = settings.model_copy(update={"instance_id": "pusher-b"})
    sock = bind_socket("127.0.0.1", 0)
    a = socket_url(sock)
    app = create_agent_app(PUSHER, settings, a)
    async with serving(app, sock), running_agent(PUSHER, other) as b:
        runner, bystander = await _client(a, a2a_http), await _client(b, a2a_http)
        stream = runner.send_message(skill_message("gated", {"gate": "g1"}))
        first = await anext(aiter(stream))
        task_id = first.task.id if first.HasField("task") else first.status_update.task_id
        config = _config(receiver.url + "/ok", config_id="late")
        config.task_id = task_id
        await bystander.create_task_push_notification_config(config)

        async def announced() -> bool:
            return bool(app.state.push.config_store.known_configured(task_id))

        await wait_for(announced, 5, "replica a heard of the config")
        GATE["g1"].set()
        async for _ in stream:
            pass
        await wait_for(lambda: receiver.completed("ok"), 10, "the webhook got the end")
    kinds = [_kind(h.body) for h in receiver.accepted("ok")]
    assert kinds[-2:] == ["artifactUpdate", "statusUpdate"]


async def test_a_failing_webhook_is_retried_with_backoff_and_gets_each_update_once(
    agent: str, receiver: Receiver, a2a_http: httpx.AsyncClient
) -> None:
    client = await _client(agent, a2a_http)
    await _send(client, _config(receiver.url + "/flaky", token="t"))
    await wait_for(lambda: receiver.completed("flaky"), 20, "the flaky webhook never accepted")

    hits = receiver.accepted("flaky")
    assert [_kind(h.body) for h in hits] == UPDATES
    assert [_state(h.body) for h in hits].count(COMPLETED) == 1
    for accepted in hits:
        tries = [h for h in receiver.hits if h.event_id == accepted.event_id]
        assert [h.status for h in tries] == [500, 500, 200]
        assert all(h.body == accepted.body for h in tries)  # a retry is the same update
        # Backoff 0.1 s doubling, jittered within [d/2, d]: waits of >= 0.05 s, then >= 0.1 s.
        first_wait, second_wait = tries[1].at - tries[0].at, tries[2].at - tries[1].at
        assert first_wait >= 0.05
        assert second_wait >= 0.1
    # In order: an update is first tried only after the one before it was accepted.
    for before, after in itertools.pairwise(hits):
        first_try = next(h for h in receiver.hits if h.event_id == after.event_id)
        assert first_try.at > before.at


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("ftp://127.0.0.1/hook", "scheme"),
        ("http://[::1]/hook", "loopback"),
    ],
)
async def test_a_refused_url_is_invalid_params(
    agent: str, a2a_http: httpx.AsyncClient, url: str, says: str
) -> None:
    client = await _client(agent, a2a_http)
    task = await call_skill(client, "echo", "x")
    config = _config(url, "c1")
    config.task_id = task.id
    with pytest.raises(Exception, match=says) as caught:
        await client.create_task_push_notification_config(config)
    assert "push notification URL refused" in str(caught.value)
    listed = await client.list_task_push_notification_configs(
        ListTaskPushNotificationConfigsRequest(task_id=task.id)
    )
    assert list(listed.configs) == []


async def test_loopback_is_refused_unless_allowed(
    settings: AgentSettings, receiver: Receiver, a2a_http: httpx.AsyncClient
) -> None:
    strict = settings.model_copy(update={"push_allowed_hosts": []})
    async with running_agent(PUSHER, strict) as url:
        client = await _client(url, a2a_http, "HTTP+JSON")
        with pytest.raises(Exception, match="loopback"):
            await _send(client, _config(receiver.url + "/ok"))
    assert receiver.hits == []
    relaxed = strict.model_copy(update={"push_allow_private": True})
    async with running_agent(PUSHER, relaxed) as url:
        await _send(await _client(url, a2a_http), _config(receiver.url + "/ok"))
        await wait_for(lambda: receiver.completed("ok"), 10, "no update with private allowed")


async def test_a_hanging_webhook_times_out_without_slowing_the_task(
    settings: AgentSettings,
    receiver: Receiver,
    a2a_http: httpx.AsyncClient,
    sender_log: pytest.LogCaptureFixture,
) -> None:
    quick = settings.model_copy(update={"push_timeout_s": 1.5, "push_max_attempts": 2})
    async with running_agent(PUSHER, quick) as url:
        client = await _client(url, a2a_http)
        started = time.monotonic()
        await _send(client, _config(receiver.url + "/hang"))
        # Four updates: delivered inline, each would have held the task for 3 s (2 attempts).
        assert time.monotonic() - started < 1.5

        def gave_up() -> bool:
            return any("given up" in r.getMessage() for r in sender_log.records)

        await wait_for(gave_up, 10, "the hanging webhook was not given up")
    first = receiver.hits[0].event_id
    assert [h.event_id for h in receiver.hits[:2]] == [first, first]  # timed out, retried
    warning = next(r for r in sender_log.records if "given up" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert warning.exc_info is None
    assert "\n" not in warning.getMessage()
    assert "no answer within 1.5s" in warning.getMessage()


# --- the pieces on their own ---------------------------------------------------------------


@pytest.fixture
def configs(redis: aioredis.Redis, redis_prefix: str) -> RedisPushConfigStore:
    return RedisPushConfigStore(redis, "pusher", keys=RedisKeys(redis_prefix))


@pytest.fixture
def sender_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The push sender's warnings (given up, dropped)."""
    caplog.set_level(logging.WARNING, logger="agents.scaffold.push.sender")
    return caplog


def _update(state: TaskState, context_id: str = "c") -> TaskStatusUpdateEvent:
    """A status update of task ``t1``."""
    status = TaskStatus(state=state)
    return TaskStatusUpdateEvent(task_id="t1", context_id=context_id, status=status)


def _sender(
    store: RedisPushConfigStore,
    policy: PushUrlPolicy | None = None,
    *,
    retry: RetryPolicy | None = None,
    **options: Any,
) -> PushSender:
    """A sender of ``store``'s configs to the local receiver (private addresses allowed)."""
    return PushSender(
        store,
        policy or PushUrlPolicy(allow_private=True),
        httpx.AsyncClient(),
        agent="pusher",
        retry=retry or RetryPolicy(timeout_s=30),
        **options,
    )


def _as(name: str) -> ServerCallContext:
    return owner_context(name)


async def test_the_store_scopes_by_owner_and_bounds_configs_per_task(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    store = RedisPushConfigStore(
        redis, "pusher", keys=RedisKeys(redis_prefix), retention_s=60, max_per_task=2
    )
    await store.set_info("t1", _config("https://a.example/1", "a"), _as("alice"))
    await store.set_info("t1", _config("https://b.example/1", "b"), _as("bob"))
    with pytest.raises(InvalidParamsError, match="already has 2"):
        await store.set_info("t1", _config("https://a.example/2", "a2"), _as("alice"))
    replaced = await store.set_info("t1", _config("https://a.example/3", "a"), _as("alice"))
    assert replaced.url == "https://a.example/3"
    default_id = await store.set_info("t2", _config("https://a.example/4"), _as("alice"))
    assert default_id.id == "t2"

    assert [c.url for c in await store.get_info("t1", _as("alice"))] == ["https://a.example/3"]
    assert [c.id for c in await store.get_info("t1", _as("bob"))] == ["b"]
    assert [c.id for c in await store.get_info_for_dispatch("t1")] == ["a", "b"]
    await store.delete_info("t1", _as("bob"), "a")  # not bob's: nothing happens
    await store.delete_info("t1", _as("alice"))
    assert [c.id for c in await store.get_info_for_dispatch("t1")] == ["b"]
    assert 0 < await redis.pttl(RedisKeys(redis_prefix).push_configs("pusher", "t1")) <= 60_000


LITERALS = [
    "8.8.8.8",
    "127.0.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "[::1]",
    "[fe80::1]",
    "[fc00::1]",
    "[::ffff:127.0.0.1]",
    "[2001:4860:4860::8888]",
]


@pytest.mark.parametrize("host", LITERALS)
async def test_the_default_policy_is_the_sdks(host: str) -> None:
    url = f"https://{host}/hook"
    assert (await PushUrlPolicy().check(url) is None) == await validate_push_notification_url(url)


async def test_what_the_operator_may_allow() -> None:
    private = PushUrlPolicy(allow_private=True)
    assert await private.check("http://127.0.0.1:9/x") is None
    assert await private.check("http://10.0.0.1/x") is None
    refused = await private.check("http://169.254.169.254/x")
    assert refused is not None
    assert "link-local" in refused.reason
    listed = PushUrlPolicy(allowed_hosts=["169.254.169.254/32", "hooks.internal"])
    assert await listed.check("http://169.254.169.254/x") is None
    assert await listed.check("https://hooks.internal/x") is None  # named: not resolved
    refused = await listed.check("http://10.0.0.1/x")
    assert refused is not None
    assert "private" in refused.reason


async def test_dns_is_checked_again_at_delivery(
    configs: RedisPushConfigStore, receiver: Receiver, sender_log: pytest.LogCaptureFixture
) -> None:
    """A name that resolved to a public address when set, and to loopback later, gets nothing."""
    answers = [["93.184.215.14"], ["127.0.0.1"]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    policy = PushUrlPolicy(resolve=rebinding)
    url = receiver.url.replace("127.0.0.1", "localhost") + "/ok"
    assert await policy(url)  # what the request handler asks when the config is set
    await configs.set_info("t1", _config(url, "c1"), _as("alice"))
    sender = _sender(configs, policy, retry=RetryPolicy(first_delay_s=0.01))
    await sender.send_notification("t1", _update(TaskState.TASK_STATE_WORKING))
    await wait_for(lambda: sender.pending == 0, 10, "the update was not settled")
    await sender.aclose()
    assert receiver.hits == []
    (warning,) = [r for r in sender_log.records if "given up" in r.getMessage()]
    assert "loopback" in warning.getMessage()
    assert "after 1 attempt" in warning.getMessage()  # a refusal is not retried


async def test_shutdown_drains_within_its_bound(
    configs: RedisPushConfigStore, receiver: Receiver, sender_log: pytest.LogCaptureFixture
) -> None:
    await configs.set_info("t1", _config(receiver.url + "/ok", "fast"), _as("alice"))
    await configs.set_info("t1", _config(receiver.url + "/hang", "stuck"), _as("alice"))
    sender = _sender(configs, drain_s=0.5)
    event = _update(TaskState.TASK_STATE_COMPLETED)
    await sender.send_notification("t1", event)
    started = time.monotonic()
    await sender.aclose()
    assert time.monotonic() - started < 5
    assert [h.hook for h in receiver.accepted("ok")] == ["ok"]
    assert any("dropped at shutdown" in r.getMessage() for r in sender_log.records)
    await sender.send_notification("t1", event)  # after close: dropped, not queued
    assert sender.pending == 0


async def test_a_webhook_that_falls_behind_loses_its_oldest_updates(
    configs: RedisPushConfigStore, receiver: Receiver, sender_log: pytest.LogCaptureFixture
) -> None:
    await configs.set_info("t1", _config(receiver.url + "/hang", "slow"), _as("alice"))
    sender = _sender(configs, max_queued=2, drain_s=0)

    async def update(n: int) -> None:
        await sender.send_notification("t1", _update(TaskState.TASK_STATE_WORKING, str(n)))

    await update(0)
    await wait_for(lambda: len(receiver.hits) == 1, 10, "the first update was not sent")
    for n in range(1, 6):
        await update(n)
    await wait_for(lambda: sender.pending == 3, 10, "the updates were not queued")  # 1 + 2
    dropped = [r for r in sender_log.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1
    assert "more than 2 updates waiting" in dropped[0].getMessage()
    await sender.aclose()
