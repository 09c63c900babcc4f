"""The Redis key schema: every key Scriptorium writes is named here, and only here.

All keys start with a configurable prefix (``SCRIPTORIUM_REDIS_PREFIX``, default
``scriptorium``) so several stacks can share one Redis. Who writes each key: "Redis keys" in
``docs/registry.md``.

=========================================  ======  ==============================================
key                                        type    holds
=========================================  ======  ==============================================
``{p}:agents``                             set     ids of every registered instance
``{p}:agent:{id}``                         hash    id, card (JSON), name, url, skills (JSON), tags
                                                   (JSON), capacity, leased, load, state,
                                                   registered_at, last_seen (ms), binding
                                                   (what the id is bound to: the URL)
``{p}:skill:{skill}``                      set     ids of instances offering a skill
``{p}:tag:{tag}``                          set     ids of instances with a skill tagged so
``{p}:changes``                            stream  change feed: registered, state, deregistered,
                                                   session events (capped)
``{p}:sessions``                           zset    active session id -> lease expiry (ms)
``{p}:sessions:closed``                    zset    closed session id -> close time (ms), trimmed
                                                   to the session retention
``{p}:session:{sid}``                      hash    id, roles, bindings (JSON), created, expires,
                                                   ended, trace_id, state, seq (last event seq)
``{p}:session:{sid}:events``               stream  the session's event log (seq, ts, from, to,
                                                   kind, task_id, payload, summary, truncated)
``{p}:a2a:{agent}:task:{task}``            hash    an A2A task: ``t`` snapshot (protobuf bytes),
                                                   ``v`` version, ``s`` state, ``o`` owner,
                                                   ``r`` runner id
``{p}:a2a:{agent}:events:{task}``          stream  the task's events, entry id ``0-<version>``,
                                                   field ``e`` (StreamResponse bytes)
``{p}:a2a:{agent}:runner:{id}``            string  present while process ``id`` runs tasks
``{p}:a2a:{agent}:cancels``                pubsub  cancelled task ids, for the replica running them
``{p}:a2a:{agent}:push-added``             pubsub  ids of tasks just given a push config
``{p}:a2a:{agent}:tasks:{owner}``          zset    task ids by last update (ms)
``{p}:a2a:{agent}:push:{task}``            hash    push notification configs of a task:
                                                   JSON ``[owner, config id]`` -> config
                                                   (protobuf bytes); expires with the task
``{p}:vec:{space}:{sha1}``                 string  a text's embedding (float32 bytes), shared by
                                                   the writer and critic, expires after minutes
=========================================  ======  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """Key names under one prefix."""

    prefix: str = "scriptorium"

    @property
    def agents(self) -> str:
        return f"{self.prefix}:agents"

    def agent(self, instance_id: str) -> str:
        return f"{self.prefix}:agent:{instance_id}"

    def agent_prefix(self) -> str:
        """What :meth:`agent` puts before the id (Lua scripts build names from it)."""
        return f"{self.prefix}:agent:"

    def skill(self, skill_id: str) -> str:
        return f"{self.prefix}:skill:{skill_id}"

    def tag(self, tag: str) -> str:
        return f"{self.prefix}:tag:{tag}"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"

    @property
    def sessions(self) -> str:
        return f"{self.prefix}:sessions"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def session_events(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}:events"

    @property
    def closed_sessions(self) -> str:
        return f"{self.prefix}:sessions:closed"

    def skill_prefix(self) -> str:
        """What :meth:`skill` puts before the skill id (Lua scripts build names from it)."""
        return f"{self.prefix}:skill:"

    def tag_prefix(self) -> str:
        """What :meth:`tag` puts before the tag (Lua scripts build names from it)."""
        return f"{self.prefix}:tag:"

    def session_prefix(self) -> str:
        """What :meth:`session` puts before the session id (Lua scripts build names from it)."""
        return f"{self.prefix}:session:"

    def session_events_suffix(self) -> str:
        """What :meth:`session_events` appends to :meth:`session` (for Lua scripts)."""
        return ":events"

    def task(self, agent: str, task_id: str) -> str:
        """One A2A task: a hash of its snapshot, version, state, owner and runner."""
        return f"{self.prefix}:a2a:{agent}:task:{task_id}"

    def task_events(self, agent: str, task_id: str) -> str:
        """The Redis Stream of one task's events; entry ids are ``0-<sequence>``."""
        return f"{self.prefix}:a2a:{agent}:events:{task_id}"

    def task_cancels(self, agent: str) -> str:
        """Pub/sub channel: ``{task, owner}`` of each cancelled task, for the replica running it."""
        return f"{self.prefix}:a2a:{agent}:cancels"

    def task_runner(self, agent: str, runner_id: str) -> str:
        """Present while the process ``runner_id`` is alive to run this agent's tasks."""
        return f"{self.prefix}:a2a:{agent}:runner:{runner_id}"

    def vector(self, space: str, digest: str) -> str:
        """A shared embedding: ``space`` names the model and backend, ``digest`` the text."""
        return f"{self.prefix}:vec:{space}:{digest}"

    def task_index(self, agent: str, owner: str) -> str:
        return f"{self.prefix}:a2a:{agent}:tasks:{owner}"

    def push_announcements(self, agent: str) -> str:
        """Pub/sub channel: ids of tasks that were just given a push config, for every replica."""
        return f"{self.prefix}:a2a:{agent}:push-added"

    def push_configs(self, agent: str, task_id: str) -> str:
        """The push notification configs of one task, every owner's (see the table above)."""
        return f"{self.prefix}:a2a:{agent}:push:{task_id}"
