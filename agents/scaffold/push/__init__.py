"""A2A push notifications, assembled for the SDK's ``DefaultRequestHandler``.

* :mod:`agents.scaffold.push.configs` — the configs a client set on a task (CreateTaskPush
  NotificationConfig, or ``configuration.task_push_notification_config`` of SendMessage),
  scoped by owner, one Redis hash per task, expiring with the task, at most N per task.
* :mod:`agents.scaffold.push.sender` — ordered at-least-once delivery in the background.
* :mod:`agents.scaffold.push.urls` — which webhook URLs are allowed: http(s) to public
  addresses unless the operator allows more. Checked when a config is set and again (DNS
  included) before every delivery attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis

from agents.scaffold.push.configs import RedisPushConfigStore
from agents.scaffold.push.sender import PushSender, RetryPolicy
from agents.scaffold.push.urls import PushUrlPolicy
from agents.scaffold.settings import AgentSettings
from registry.keys import RedisKeys


@dataclass(frozen=True)
class PushParts:
    """What the request handler needs for push notifications, and how to stop delivering."""

    config_store: RedisPushConfigStore
    sender: PushSender
    url_validator: Callable[[str], Awaitable[bool]]
    aclose: Callable[[], Awaitable[None]]


def push_parts(
    redis: aioredis.Redis, agent_name: str, keys: RedisKeys, settings: AgentSettings
) -> PushParts:
    """The config store, sender and URL policy of one agent, from its settings."""
    store = RedisPushConfigStore(
        redis,
        agent_name,
        keys=keys,
        retention_s=settings.task_retention_s,
        max_per_task=settings.push_max_configs_per_task,
    )
    policy = PushUrlPolicy(
        allow_private=settings.push_allow_private,
        allowed_hosts=settings.push_allowed_hosts,
        timeout_s=settings.push_timeout_s,
    )
    retry = RetryPolicy(
        max_attempts=settings.push_max_attempts,
        first_delay_s=settings.push_backoff_s,
        max_delay_s=settings.push_backoff_max_s,
        give_up_s=settings.push_give_up_s,
        timeout_s=settings.push_timeout_s,
    )
    sender = PushSender(
        store,
        policy,
        _webhook_client(agent_name, settings),
        agent=agent_name,
        retry=retry,
        max_queued=settings.push_max_queued,
        drain_s=settings.push_drain_s,
    )
    return PushParts(store, sender, policy, sender.aclose)


def _webhook_client(agent_name: str, settings: AgentSettings) -> httpx.AsyncClient:
    """The HTTP client that posts to webhooks: bounded in time and connections, no redirects."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.push_timeout_s,
            connect=min(settings.connect_timeout_s, settings.push_timeout_s),
        ),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        headers={"User-Agent": f"scriptorium-{agent_name}"},
    )
