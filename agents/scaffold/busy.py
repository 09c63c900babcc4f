"""Work in progress that a shutdown waits for: what is busy, and waiting until nothing is."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable


class Busy:
    """What is in progress, by key (beginning a key twice counts once); :meth:`drain` waits
    until nothing is."""

    def __init__(self) -> None:
        self._keys: set[Hashable] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._keys)

    def begin(self, key: Hashable) -> None:
        """``key`` is in progress."""
        self._keys.add(key)
        self._idle.clear()

    def end(self, key: Hashable) -> None:
        """``key`` is done (or never began)."""
        self._keys.discard(key)
        if not self._keys:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is in progress (at most ``timeout_s``); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
