"""The project's layout rules, checked on the source and the installed environment."""

from __future__ import annotations

import ast
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("agents", "protocol", "registry", "scriptorium")
AGENTS = ("orchestrator", "retriever", "writer", "critic", "inference")


def _imports(package: str) -> dict[Path, set[str]]:
    found: dict[Path, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[path] = names
    return found


def test_no_dependency_shadows_our_top_level_names() -> None:
    owners = packages_distributions()
    for name in OURS:
        assert set(owners.get(name, [])) <= {"scriptorium"}, (name, owners.get(name))


def test_protocol_imports_nothing_of_ours() -> None:
    for path, names in _imports("protocol").items():
        ours = {n for n in names if n.split(".")[0] in OURS and not n.startswith("protocol")}
        assert not ours, f"{path} imports {ours}"


def test_registry_never_imports_agents() -> None:
    for path, names in _imports("registry").items():
        assert not {n for n in names if n.split(".")[0] in ("agents", "scriptorium")}, path


def test_only_the_scaffold_imports_the_registry() -> None:
    for package in ("agents/common", *(f"agents/{agent}" for agent in AGENTS)):
        for path, names in _imports(package).items():
            reaching = {n for n in names if n == "registry" or n.startswith("registry.")}
            assert not reaching, f"{path} imports {reaching}: go through agents.scaffold"


@pytest.mark.parametrize("agent", AGENTS)
def test_no_agent_imports_another_agent(agent: str) -> None:
    others = {f"agents.{a}" for a in AGENTS if a != agent}
    for path, names in _imports(f"agents/{agent}").items():
        crossing = {n for n in names if any(n == o or n.startswith(o + ".") for o in others)}
        assert not crossing, f"{path} imports {crossing}"
