"""The images' HEALTHCHECK: GET /healthz on the port this container's command serves.

One image runs the registry or any agent, so the port is read from the container's command
(``/proc/1/cmdline``: ``scriptorium registry|agent NAME [--port P]``, under an init or not),
and without ``--port`` it is the component's default, as the CLI computes it. Exit 0 when
/healthz answers 200, 1 otherwise (Docker's contract). Kubernetes does not use it: its probes
are in compose/k8s.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from pathlib import Path

from protocol.settings import AGENT_NAMES, CommonSettings

TIMEOUT_S = 4.0


def component_and_port(argv: list[str]) -> tuple[str, int | None]:
    """The component a ``scriptorium`` command line runs and its ``--port``, if given."""
    component = ""
    port: int | None = None
    for i, arg in enumerate(argv):
        if not component and arg == "registry":
            component = "registry"
        elif not component and arg == "agent" and i + 1 < len(argv):
            if argv[i + 1] in AGENT_NAMES:
                component = argv[i + 1]
        elif arg == "--port" and i + 1 < len(argv):
            port = int(argv[i + 1])
        elif arg.startswith("--port="):
            port = int(arg.split("=", 1)[1])
    return component, port


def main() -> int:
    argv = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    component, port = component_and_port(argv)
    if not component:
        print(f"not a scriptorium registry or agent: {' '.join(argv)}", file=sys.stderr)
        return 1
    if port is None:
        port = CommonSettings().port_of(component)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
