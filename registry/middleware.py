"""The registry API's metrics and the ASGI middleware timing its requests.

Request counts and latencies are kept as requests pass; what the registry holds (instances,
their leases and heartbeat ages, open sessions) is read from Redis on each scrape
(:meth:`Metrics.refresh`), so it is never staler than the scrape. The body limit is in
``protocol.http``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.records import AgentRecord, AgentState

#: Labels of the per-instance gauges. ``instance_id``, not ``instance``: Prometheus sets
#: ``instance`` itself (the scraped target) and would rename ours.
INSTANCE_LABELS = ("agent", "instance_id")


class Metrics:
    """The API's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "scriptorium_registry_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "scriptorium_registry_request_duration_seconds",
            "Time to answer HTTP requests (streams: until they end).",
            ["method", "route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.agents = Gauge(
            "scriptorium_registry_agents",
            "Registered agent instances by state.",
            ["state"],
            registry=self.registry,
        )
        self.sessions_active = Gauge(
            "scriptorium_registry_sessions_active",
            "Sessions currently holding leases.",
            registry=self.registry,
        )
        self.sessions_expired = Counter(
            "scriptorium_registry_sessions_expired_total",
            "Sessions whose lease ran out (not released) and that this replica's sweep closed.",
            registry=self.registry,
        )
        self.leases = Gauge(
            "scriptorium_registry_leases",
            "Session leases held on each registered instance.",
            INSTANCE_LABELS,
            registry=self.registry,
        )
        self.capacity = Gauge(
            "scriptorium_registry_capacity",
            "Sessions each registered instance accepts at once (its card's capacity).",
            INSTANCE_LABELS,
            registry=self.registry,
        )
        self.heartbeat_age = Gauge(
            "scriptorium_registry_heartbeat_age_seconds",
            "Time since each registered instance's last heartbeat (Redis clock, at scrape).",
            INSTANCE_LABELS,
            registry=self.registry,
        )
        self.sweep_errors = Counter(
            "scriptorium_registry_sweep_errors_total",
            "Sweeps that failed (Redis unreachable, ...).",
            registry=self.registry,
        )
        self._per_instance = (self.leases, self.capacity, self.heartbeat_age)

    def refresh(self, records: Sequence[AgentRecord], sessions_active: int, now_ms: int) -> None:
        """Set the gauges of what the registry holds from one read of it (at scrape time).

        Instances gone since the last scrape lose their series.
        """
        for state in AgentState:
            self.agents.labels(state.value).set(sum(1 for r in records if r.state == state))
        self.sessions_active.set(sessions_active)
        self.forget_instances()
        for record in records:
            labels = (record.name, record.id)
            self.leases.labels(*labels).set(record.leased)
            self.capacity.labels(*labels).set(record.capacity)
            age_s = max(0, now_ms - record.last_seen) / 1000
            self.heartbeat_age.labels(*labels).set(age_s)

    def forget_instances(self) -> None:
        """Drop the per-instance series (when Redis cannot say which instances exist)."""
        for gauge in self._per_instance:
            gauge.clear()


class MetricsMiddleware:
    """Counts requests and times them, labelled by route template (not raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)
