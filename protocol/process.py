"""Child processes that do not outlive their parent."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: have the kernel send SIGTERM to this (child) process when its parent dies.

    Pass as ``preexec_fn`` so a crashed launcher or agent never leaves servers behind.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
