"""The five agents as real processes: registered, discoverable, and honest about missing skills."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from a2a.types import TaskState

from protocol.cards import CARD_PATH
from protocol.client import SkillFailed, call_skill, open_client
from protocol.settings import AGENT_NAMES
from scriptorium.launcher import Stack

EXPECTED_SKILLS = {
    "orchestrator": ["answer"],
    "retriever": ["search", "ingest"],
    "writer": ["write"],
    "critic": ["critique"],
    "inference": ["generate"],
}


def test_all_five_agents_are_healthy_with_their_skills(stack: Stack) -> None:
    records = {r["name"]: r for r in stack.agents_json()}
    assert set(records) == set(AGENT_NAMES)
    for name, record in records.items():
        assert record["state"] == "healthy"
        assert record["skills"] == EXPECTED_SKILLS[name]
        served = httpx.get(record["url"] + CARD_PATH, timeout=5).json()
        assert served == record["card"]


def test_discovery_by_skill_and_tag(stack: Stack) -> None:
    by_skill = httpx.get(f"{stack.registry_url}/agents", params={"skill": "search"}, timeout=5)
    # Names, not instances: other tests on this shared stack add and remove replicas.
    assert {r["name"] for r in by_skill.json()} == {"retriever"}
    by_tag = httpx.get(f"{stack.registry_url}/agents", params={"tag": "citations"}, timeout=5)
    assert {r["name"] for r in by_tag.json()} == {"critic", "orchestrator", "writer"}


@pytest.mark.parametrize(("agent", "skill"), [("writer", "write"), ("critic", "critique")])
async def test_malformed_requests_are_rejected_with_the_reason(
    stack: Stack, a2a_http: httpx.AsyncClient, agent: str, skill: str
) -> None:
    client = await open_client(stack.url_of(agent), a2a_http)
    with pytest.raises(SkillFailed) as caught:
        await call_skill(client, skill, {"query": "x"})
    assert caught.value.task.status.state == TaskState.TASK_STATE_REJECTED
    assert "question" in str(caught.value)  # names the missing field


def _free_base_port() -> int:
    for _ in range(50):
        base = 20_000 + (os.getpid() * 7 + int(time.time() * 1000)) % 30_000
        try:
            socks = []
            for offset in range(6):
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + offset))
                socks.append(sock)
            return base
        except OSError:
            time.sleep(0.01)
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no six consecutive free ports")


def test_up_starts_everything_and_ctrl_c_leaves_nothing_running(
    redis_url: str, redis_prefix: str, tmp_path: object, inference_url: str
) -> None:
    base = _free_base_port()
    env = {
        **os.environ,
        "SCRIPTORIUM_INFERENCE_URL": inference_url,
        "REDIS_URL": redis_url,
        "SCRIPTORIUM_REDIS_PREFIX": redis_prefix,
        "SCRIPTORIUM_HEARTBEAT_INTERVAL_S": "0.5",
        "SCRIPTORIUM_DATA_DIR": str(tmp_path),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "scriptorium", "up", "--base-port", str(base), "--no-live"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        healthy: set[str] = set()
        while time.monotonic() < deadline and healthy != set(AGENT_NAMES):
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            try:
                records = httpx.get(f"http://127.0.0.1:{base}/agents", timeout=2).json()
                healthy = {r["name"] for r in records if r["state"] == "healthy"}
                ports = {r["name"]: int(r["url"].rsplit(":", 1)[1]) for r in records}
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert healthy == set(AGENT_NAMES)
        assert ports == {name: base + 1 + i for i, name in enumerate(AGENT_NAMES)}
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 6
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 0, output.decode()
    assert "nothing left running" in output.decode()
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{base}/healthz", timeout=2)


def test_agents_command_reads_the_discovery_endpoint(stack: Stack) -> None:
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "scriptorium",
            "agents",
            "--skill",
            "critique",
            "--json",
            "--registry-url",
            stack.registry_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert [r["name"] for r in json.loads(shown.stdout)] == ["critic"]
    down = subprocess.run(
        [sys.executable, "-m", "scriptorium", "agents", "--registry-url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1
    assert "no Scriptorium stack answers at http://127.0.0.1:9" in down.stderr
    assert "scriptorium up" in down.stderr


def test_agent_options_are_passed_as_settings_not_written_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from agents.inference.settings import InferenceSettings
    from agents.scaffold.settings import AgentSettings
    from scriptorium import cli

    served: list[tuple[str, int, AgentSettings | None]] = []
    monkeypatch.setattr(cli, "run_agent", lambda *args: served.append(args))
    for name in ("SCRIPTORIUM_MODEL", "SCRIPTORIUM_INFERENCE_URL", "INFERENCE_URL"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    command = ["agent", "inference", "--port", "9", "--grpc-port", "0", "--model", "some-model"]
    done = runner.invoke(cli.app, [*command, "--inference-url", "http://127.0.0.1:9/v1"])
    assert done.exit_code == 0, done.output
    [(name, port, settings)] = served
    assert (name, port) == ("inference", 9)
    assert isinstance(settings, InferenceSettings)
    assert (settings.model, settings.inference_url) == ("some-model", "http://127.0.0.1:9/v1")
    assert settings.grpc_port == 0
    assert "SCRIPTORIUM_MODEL" not in os.environ
    assert "SCRIPTORIUM_INFERENCE_URL" not in os.environ

    refused = runner.invoke(cli.app, ["agent", "writer", "--model", "some-model"])
    assert refused.exit_code == 2
    assert "apply to the inference agent only" in refused.output
