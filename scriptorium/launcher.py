"""Starting Scriptorium: one component in this process, or a whole stack of subprocesses.

The :class:`Stack` is what ``scriptorium up`` and the test harness run: an embedded Valkey
when no REDIS_URL is given, the registry, and the agents, each its own process. Stopping it
(Ctrl-C, SIGTERM, or :meth:`Stack.stop`) leaves nothing running.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from pydantic import SecretStr

from agents.scaffold.app import AgentParts, serve_agent
from agents.scaffold.settings import AgentSettings
from protocol.auth import AuthConfigError, check_configured
from protocol.auth import configured as auth_configured
from protocol.auth import enforced as auth_enforced
from protocol.process import die_with_parent
from protocol.settings import AGENT_NAMES, CommonSettings
from registry.settings import RegistrySettings
from scriptorium.valkey import start_valkey

log = logging.getLogger(__name__)


#: How long ``scriptorium up`` and ``demo`` wait for every agent to be healthy (vLLM loads).
STACK_START_TIMEOUT_S = 600
#: The file in the data dir where a stack writes the token it generated (owner-only).
TOKEN_FILE = "stack-token"  # noqa: S105 (a file name, not a secret)


class StackError(RuntimeError):
    """The stack could not start; the message says which part and where its log is."""


def load_agent(name: str, settings: AgentSettings) -> AgentParts:
    """Import an agent package and build its parts."""
    if name not in AGENT_NAMES:
        raise StackError(f"unknown agent {name!r}; choose one of: {', '.join(AGENT_NAMES)}")
    module = importlib.import_module(f"agents.{name}.agent")
    parts: AgentParts = module.build(settings)
    return parts


def run_agent(name: str, port: int, settings: AgentSettings | None = None) -> None:
    """Serve one agent on ``port`` (gRPC too, unless ``settings.grpc_port`` sets it apart)
    in this process until interrupted.

    ``settings`` (default: read from the environment) may be the agent's own class, e.g.
    ``InferenceSettings(model=...)``: the fields set in it win over the environment.
    """
    settings = AgentSettings() if settings is None else settings
    _refuse_without_credentials(settings)
    asyncio.run(serve_agent(load_agent(name, settings), settings, port=port))


def run_registry(host: str, port: int) -> None:
    """Serve the registry's discovery endpoint in this process until interrupted."""
    from registry.api import serve

    settings = RegistrySettings()
    _refuse_without_credentials(settings)
    asyncio.run(serve(settings, host=host, port=port))


def _refuse_without_credentials(settings: CommonSettings) -> None:
    """Exit (status 2) saying what to set when auth is required and nothing is configured."""
    try:
        check_configured(settings)
    except AuthConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def interrupt_on_signals() -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt, whatever this process inherited.

    A shell starts background jobs with SIGINT ignored, and Python then installs no handler
    of its own: without this, ``scriptorium up &`` would not stop on SIGINT.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupt)


def ignore_signals() -> None:
    """Let a stop that has begun finish: a second Ctrl-C must not leave processes behind."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def auth_env(settings: CommonSettings) -> dict[str, str]:
    """The auth settings of ``settings`` as the environment of a child process."""
    env = {"SCRIPTORIUM_AUTH": settings.auth, "SCRIPTORIUM_OPERATORS": settings.operators}
    for name in ("token", "api_keys", "jwt_secret"):
        value = getattr(settings, name)
        if value is not None:
            env[f"SCRIPTORIUM_{name.upper()}"] = value.get_secret_value()
    for name in ("jwks_url", "jwt_audience"):
        if getattr(settings, name) is not None:
            env[f"SCRIPTORIUM_{name.upper()}"] = str(getattr(settings, name))
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """Valkey (unless REDIS_URL is given), the registry and agents as subprocesses.

    Ports: ``base_port`` + the component's offset, or ``ephemeral=True`` for free ports
    (agents then bind port 0 and are found through the registry).

    Auth: the components get the stack's auth settings, and each its own identity
    (``SCRIPTORIUM_IDENTITY``: its name). With auth required and no credential configured,
    the stack makes a random token of its own (:attr:`generated_token`), hands it to every
    component and uses it itself (``settings.auth_headers()``): auth stays on locally.
    """

    def __init__(
        self,
        settings: CommonSettings,
        *,
        agents: Sequence[str] = AGENT_NAMES,
        ephemeral: bool = False,
        persist: bool = True,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        #: Whether the token every component and client uses was made for this stack.
        self.generated_token = settings.auth == "required" and not auth_configured(settings)
        if self.generated_token:
            settings = settings.model_copy(update={"token": SecretStr(secrets.token_urlsafe(32))})
        self.settings = settings
        self.agents = list(agents)
        self.ephemeral = ephemeral
        self.persist = persist
        self.extra_env = env or {}
        self.log_dir = log_dir or settings.data_dir / "logs"
        self.redis_url = settings.redis_url
        self.registry_url = ""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._valkey: Any = None

    @property
    def token_file(self) -> Path:
        """Where a generated token is written (owner-only) for other local clients."""
        return self.settings.data_dir / TOKEN_FILE

    @property
    def viewer_url(self) -> str:
        """The session viewer's address; with a generated token, carrying it in the fragment
        (which browsers never send to a server) so the viewer can follow live sessions."""
        url = f"{self.registry_url}/ui"
        if self.generated_token and self.settings.token is not None:
            return f"{url}#token={self.settings.token.get_secret_value()}"
        return url

    def auth_summary(self) -> str:
        """One line saying how this stack authenticates (never the secret itself)."""
        if not auth_enforced(self.settings):
            return "auth is off (local development)"
        if self.generated_token:
            return (
                f"auth is on: this stack's token is in {self.token_file} (scriptorium "
                "commands run from this folder use it; other clients: export "
                f"SCRIPTORIUM_TOKEN=$(cat {self.token_file}))"
            )
        return "auth is on (the configured credentials)"

    def start(self) -> None:
        """Start every component (does not wait for registration)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.generated_token and self.settings.token is not None:
            self.token_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.settings.token.get_secret_value())
        if not self.redis_url:
            data = self.settings.data_dir / "valkey" if self.persist else None
            self._valkey = start_valkey(data)
            self.redis_url = self._valkey.connection_url
        host = self.settings.public_host
        registry_port = free_port(host) if self.ephemeral else self.settings.port_of("registry")
        self.registry_url = f"http://{host}:{registry_port}"
        self._spawn("registry", ["registry", "--port", str(registry_port)])
        for name in self.agents:
            port = 0 if self.ephemeral else self.settings.port_of(name)
            self._spawn(name, ["agent", name, "--port", str(port)])

    def add_replica(self, agent: str, key: str, *, env: dict[str, str] | None = None) -> str:
        """Start another instance of ``agent`` (process key ``key``); returns its instance id.

        The instance registers itself like the first (poll :meth:`agents_json` for its id).
        """
        instance_id = f"{agent}-{key}"
        port = free_port(self.settings.host)
        self._spawn(
            key,
            ["agent", agent, "--port", str(port)],
            env={
                "SCRIPTORIUM_INSTANCE_ID": instance_id,
                "SCRIPTORIUM_IDENTITY": instance_id,
                **(env or {}),
            },
        )
        return instance_id

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        own = env or {}
        env = {
            **os.environ,
            "SCRIPTORIUM_IDENTITY": name,
            **self.extra_env,
            **own,
            "REDIS_URL": self.redis_url or "",
            "SCRIPTORIUM_REGISTRY_URL": self.registry_url,
            "SCRIPTORIUM_REDIS_PREFIX": self.settings.redis_prefix,
            "SCRIPTORIUM_HOST": self.settings.host,
            "SCRIPTORIUM_DATA_DIR": str(self.settings.data_dir),
            "SCRIPTORIUM_HEARTBEAT_INTERVAL_S": str(self.settings.heartbeat_interval_s),
            "SCRIPTORIUM_HEARTBEAT_TTL_S": str(self.settings.heartbeat_ttl_s),
        }
        env.update(auth_env(self.settings))
        log_file = (self.log_dir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "scriptorium", *args],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log_file.close()

    def agents_json(self, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        """``GET /agents`` from the registry."""
        response = httpx.get(
            f"{self.registry_url}/agents", timeout=timeout_s, headers=self.settings.auth_headers()
        )
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()
        return records

    def wait_healthy(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Wait until every agent is registered and healthy; raise with the logs' location."""
        deadline = time.monotonic() + timeout_s
        wanted = set(self.agents)
        records: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                records = self.agents_json()
            except httpx.HTTPError:
                records = []
            healthy = {r["name"] for r in records if r["state"] == "healthy"}
            if wanted <= healthy:
                return records
            time.sleep(0.1)
        missing = ", ".join(
            sorted(wanted - {r["name"] for r in records if r["state"] == "healthy"})
        )
        raise StackError(
            f"not healthy after {timeout_s:.0f}s: {missing or 'registry'}; logs in {self.log_dir}"
        )

    def check_alive(self) -> None:
        """Raise :class:`StackError` naming the first component that has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise StackError(
                    f"{name} exited with code {process.returncode}; "
                    f"see {self.log_dir / (name + '.log')}"
                )

    def url_of(self, agent: str) -> str:
        """Base URL of a (healthy) agent, as registered."""
        for record in self.agents_json():
            if record["name"] == agent and record["state"] == "healthy":
                return str(record["url"])
        raise StackError(f"agent {agent!r} is not registered and healthy")

    def stop_component(self, name: str, timeout_s: float = 15.0) -> int | None:
        """Stop one component gracefully (SIGTERM, then SIGKILL); returns its exit code."""
        process = self.processes.get(name)
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", name, timeout_s)
                process.kill()
                process.wait()
        return process.returncode

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop agents first, then the registry, then Valkey."""
        for name in list(self.processes)[::-1]:
            self.stop_component(name, timeout_s)
        if self._valkey is not None:
            self._valkey.stop()
            self._valkey = None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
