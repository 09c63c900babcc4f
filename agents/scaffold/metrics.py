"""Prometheus metrics every agent exposes at ``/metrics`` (labelled by agent)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS = Counter(
    "scriptorium_agent_tasks_total", "Skill tasks by outcome.", ["agent", "skill", "outcome"]
)
TASK_SECONDS = Histogram(
    "scriptorium_agent_task_seconds",
    "Skill task duration.",
    ["agent", "skill"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("scriptorium_agent_tasks_in_flight", "Tasks being executed.", ["agent"])
REGISTERED = Gauge(
    "scriptorium_agent_registered", "1 while the registry holds this instance.", ["agent"]
)
