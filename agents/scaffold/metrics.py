"""Prometheus metrics every agent exposes at ``/metrics`` (labelled by agent).

Names follow Prometheus conventions: base units (seconds), ``_total`` on counters. Agents
with metrics of their own keep them beside their code (``agents/<name>/metrics.py``); the
whole list is in docs/observability.md.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Task durations: from a 5 ms search to a multi-round answer on a CPU model.
#: 1.5 s is the answer latency objective (compose/k8s/monitoring.yaml).
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30, 60, 120, 300)

TASKS = Counter(
    "scriptorium_agent_tasks_total",
    "Skill tasks by outcome (completed, failed, rejected, canceled).",
    ["agent", "skill", "outcome"],
)
TASK_SECONDS = Histogram(
    "scriptorium_agent_task_seconds",
    "Time from a skill task's start to its end, whatever the outcome.",
    ["agent", "skill"],
    buckets=TASK_BUCKETS,
)
IN_FLIGHT = Gauge("scriptorium_agent_tasks_in_flight", "Skill tasks being executed now.", ["agent"])
REGISTERED = Gauge(
    "scriptorium_agent_registered", "1 while the registry holds this instance.", ["agent"]
)
