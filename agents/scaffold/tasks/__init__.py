"""A2A tasks kept in Redis, shared by every replica of an agent.

* :mod:`~agents.scaffold.tasks.store` — :class:`RedisTaskStore`, the SDK's ``VersionedTaskStore``;
  it composes :mod:`~agents.scaffold.tasks.records` (Redis layout, compare-and-swap),
  :mod:`~agents.scaffold.tasks.writer` (ordered, coalesced writes),
  :mod:`~agents.scaffold.tasks.listing` (ListTasks) and :mod:`~agents.scaffold.tasks.runners`
  (runner heartbeats, orphans).
* :mod:`~agents.scaffold.tasks.events` — each task's events in a Redis Stream: resumable
  streams and cancels across replicas.
"""
