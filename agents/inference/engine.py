"""Where the model runs: a vLLM server the agent manages, or an external one it uses.

The managed engine is vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``)
started as a child process on a Unix socket. The agent supervises it: waits for ``/health``,
relays its log, restarts it with backoff when it crashes, and stops its whole process group on
shutdown. ``docs/inference.md`` explains why a managed server and not an in-process engine.

Both kinds expose the same small surface: ``upstream`` (the client), ``ready``, ``models``
and ``status()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import httpx

from agents.inference import metrics
from agents.inference.model import model_to_load
from agents.inference.settings import InferenceSettings
from agents.inference.upstream import Upstream, UpstreamError
from protocol.extras import require
from protocol.process import die_with_parent

log = logging.getLogger(__name__)
vllm_log = logging.getLogger("vllm.server")

READY_POLL_S = 0.5
EXTERNAL_POLL_S = 5.0
STOP_TIMEOUT_S = 20.0
#: An engine that served this long before dying starts a fresh count of failures.
STABLE_S = 60.0


class Engine(Protocol):
    """What the agent needs of an engine."""

    upstream: Upstream
    ready: bool
    models: list[str]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


def open_engine(settings: InferenceSettings) -> Engine:
    """The external engine when ``inference_url`` is set, else a managed vLLM server."""
    if settings.inference_url:
        return ExternalEngine(settings)
    return ManagedEngine(settings)


class ExternalEngine:
    """An OpenAI-compatible server someone else runs (a vLLM deployment, another agent)."""

    def __init__(self, settings: InferenceSettings) -> None:
        assert settings.inference_url
        key = settings.inference_api_key
        self.upstream = Upstream(
            settings.inference_url,
            api_key=key.get_secret_value() if key else None,
            connect_timeout_s=settings.connect_timeout_s,
        )
        self.ready = False
        self.models: list[str] = []
        self.detail = "not checked yet"
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._watch = asyncio.create_task(self._poll(), name="inference:external")

    async def _poll(self) -> None:
        while True:
            try:
                self.models = await self.upstream.models()
                self.ready, self.detail = bool(self.models), "serving"
            except UpstreamError as exc:
                if self.ready:
                    log.warning("external engine unreachable", extra={"error": exc.message})
                self.ready, self.detail = False, exc.message
            metrics.ENGINE_UP.set(int(self.ready))
            await asyncio.sleep(EXTERNAL_POLL_S if self.ready else READY_POLL_S)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.upstream.aclose()

    def status(self) -> dict[str, Any]:
        return {
            "kind": "external",
            "url": self.upstream.base_url,
            "ready": self.ready,
            "models": self.models,
            "detail": self.detail,
        }


class ManagedEngine:
    """vLLM's OpenAI server as a supervised child process on a Unix socket."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        # Raise MissingExtra or ModelError (with how to fix it) before anything starts.
        require("cpu", "gpu", feature="the managed vLLM engine", modules=("vllm",))
        self.model_path = model_to_load(settings.model, settings.resolved_model_cache_dir)
        self.socket_path = str(
            Path(tempfile.gettempdir()) / f"scriptorium-vllm-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.upstream = Upstream("http://vllm/v1", uds=self.socket_path, read_timeout_s=3600)
        self.ready = False
        self.models: list[str] = []
        self.state = "stopped"
        self.detail = ""
        self.restarts = 0
        self.started_at = 0.0
        self.ready_at = 0.0
        self.tail: deque[str] = deque(maxlen=30)
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def command(self) -> list[str]:
        """The vLLM server's command line."""
        s = self.settings
        cpu = s.resolved_device == "cpu"
        args = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model_path,
            "--served-model-name",
            s.model_name,
            "--uds",
            self.socket_path,
            "--max-model-len",
            str(s.max_model_len),
            "--dtype",
            s.dtype or ("bfloat16" if cpu else "auto"),
            "--tensor-parallel-size",
            str(s.tensor_parallel_size),
            "--disable-uvicorn-access-log",
        ]
        if s.enforce_eager if s.enforce_eager is not None else cpu:
            args.append("--enforce-eager")
        if not cpu:
            args += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
        if s.max_num_seqs is not None:
            args += ["--max-num-seqs", str(s.max_num_seqs)]
        if s.engine_otlp_traces_endpoint:
            args += ["--otlp-traces-endpoint", s.engine_otlp_traces_endpoint]
        return args + list(s.engine_args)

    def environment(self) -> dict[str, str]:
        """The server's environment: offline for a local folder, and the CPU KV-cache size.

        A hub id keeps the caller's ``HF_HUB_OFFLINE`` (unset: vLLM may download it).
        """
        env = {**os.environ}
        if Path(self.model_path).exists():  # a local folder never needs the hub
            env["HF_HUB_OFFLINE"] = "1"
        if self.settings.resolved_device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.settings.cpu_kv_cache_gib:g}")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        if not self.settings.engine_otlp_traces_endpoint:
            # vLLM's engine processes trace whenever this is set: only when asked to.
            env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        return env

    async def start(self) -> None:
        """Start the server and its supervisor; returns at once (see ``ready``)."""
        self._supervisor = asyncio.create_task(self._supervise(), name="inference:vllm")

    async def _supervise(self) -> None:
        backoff_s = 2.0
        failures = 0  # in a row: reset once an engine has served for STABLE_S
        while not self._stopping:
            await self._spawn()
            assert self._process is not None
            relay = asyncio.create_task(self._relay(self._process))
            await self._wait_ready()
            code = await self._process.wait()
            served_s = time.monotonic() - self.ready_at if self.ready else 0.0
            self.ready = False
            metrics.ENGINE_UP.set(0)
            with contextlib.suppress(ProcessLookupError):  # no engine core left behind
                os.killpg(self._process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(relay, STOP_TIMEOUT_S)
            if self._stopping:
                return
            self.restarts += 1
            metrics.ENGINE_RESTARTS.inc()
            failures = 1 if served_s >= STABLE_S else failures + 1
            if served_s >= STABLE_S:
                backoff_s = 2.0
            last = " | ".join(list(self.tail)[-5:])
            log.error(
                "vLLM server exited",
                extra={"code": code, "restarts": self.restarts, "last_output": last},
            )
            if failures > self.settings.engine_max_restarts:
                self.state = "failed"
                self.detail = (
                    f"vLLM exited {failures} times in a row (last code {code}); fix the cause "
                    f"and restart the agent. Last output: {last}"
                )
                return
            self.state, self.detail = "restarting", f"vLLM exited with code {code}"
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 60.0)

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.state, self.detail = "starting", f"loading {self.model_path}"
        self.started_at = time.monotonic()
        log.info("starting vLLM", extra={"command": " ".join(self.command())})
        self._process = await asyncio.create_subprocess_exec(
            *self.command(),
            env=self.environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends the engine core too
            preexec_fn=die_with_parent,
        )

    async def _relay(self, process: asyncio.subprocess.Process) -> None:
        """Forward the server's output to our log and keep its tail for error messages."""
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.tail.append(line)
                vllm_log.info(line)

    async def _wait_ready(self) -> None:
        """Poll ``/health`` until the server answers, exits, or the start timeout passes."""
        assert self._process is not None
        deadline = self.started_at + self.settings.engine_start_timeout_s
        while self._process.returncode is None:
            try:
                response = await self.upstream.http.get(
                    f"{self.upstream.root_url}/health", timeout=5.0
                )
                if response.status_code == 200:
                    self.models = await self.upstream.models()
                    self.ready_at = time.monotonic()
                    took = self.ready_at - self.started_at
                    self.ready, self.state, self.detail = True, "ready", f"started in {took:.0f}s"
                    metrics.ENGINE_UP.set(1)
                    log.info("vLLM ready", extra={"seconds": round(took, 1)})
                    return
            except (httpx.HTTPError, UpstreamError):
                pass
            if time.monotonic() > deadline:
                self.detail = f"not ready after {self.settings.engine_start_timeout_s:.0f}s"
                log.error("vLLM did not become ready; stopping it", extra={"detail": self.detail})
                self._signal(signal.SIGKILL)
                return
            await asyncio.sleep(READY_POLL_S)

    def _signal(self, signum: int) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    async def stop(self) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL)."""
        self._stopping = True
        self.ready = False
        if self._process is not None and self._process.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("vLLM did not stop in %.0fs; killing it", STOP_TIMEOUT_S)
                self._signal(signal.SIGKILL)
                await self._process.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self.upstream.aclose()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self.state = "stopped"
        metrics.ENGINE_UP.set(0)

    def status(self) -> dict[str, Any]:
        return {
            "kind": "managed",
            "model": self.model_path,
            "socket": self.socket_path,
            "ready": self.ready,
            "state": self.state,
            "detail": self.detail,
            "restarts": self.restarts,
            "pid": self._process.pid if self._process else None,
        }
