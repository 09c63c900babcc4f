"""Optional dependencies: a missing one is an ImportError naming the extra that installs it.

The core install runs the registry and the orchestrator; the rest comes with extras
(pyproject.toml): ``retrieval`` (store, embeddings, grounding), ``cpu`` or ``gpu`` (the vLLM
engine), ``adk`` (ADK clients). Import an extra's packages inside :func:`extra`, as a2a-sdk
guards its own, so that a core-only install says what to install instead of a bare
``ModuleNotFoundError`` deep in a call::

    with extra("retrieval", feature="the LanceDB store"):
        import lancedb
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable, Iterator

DISTRIBUTION = "scriptorium"


class MissingExtra(ImportError):
    """An optional dependency is missing; the message names the extra(s) that install it."""

    def __init__(self, feature: str, extras: tuple[str, ...], cause: ImportError) -> None:
        commands = " or ".join(f"`pip install '{DISTRIBUTION}[{name}]'`" for name in extras)
        named = " or ".join(f"'{name}'" for name in extras)
        super().__init__(
            f"{feature} needs the {named} extra ({cause}): install it with {commands}",
            name=cause.name,
        )
        self.extras = extras


@contextlib.contextmanager
def extra(*extras: str, feature: str) -> Iterator[None]:
    """Re-raise an ImportError inside the block as :class:`MissingExtra` naming ``extras``."""
    try:
        yield
    except MissingExtra:
        raise
    except ImportError as exc:
        raise MissingExtra(feature, extras, exc) from exc


def require(*extras: str, feature: str, modules: Iterable[str]) -> None:
    """Raise :class:`MissingExtra` unless every top-level module is installed (found, not
    imported: for a package run in a child process, such as vLLM)."""
    with extra(*extras, feature=feature):
        for module in modules:
            if importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)
