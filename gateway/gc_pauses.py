"""How long the cyclic garbage collector stopped the process, by generation.

A collection runs on the event loop's thread and stops every call's audio while it walks the
objects it tracks: a full (generation 2) collection over a few hundred live calls takes 10-30 ms,
a whole frame or more. The loop-lag probe sees such a stall only if a tick falls inside it; this
names the cause. ``gc.callbacks`` fire only around collections, never per frame.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any


class _PauseTimer:
    """A ``gc.callbacks`` entry: times each collection from its start to its stop."""

    __slots__ = ("_observe", "_started")

    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self._observe = observe
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._observe(info["generation"], time.perf_counter() - self._started)


async def watch_gc_pauses(observe: Callable[[int, float], None]) -> None:
    """Calls ``observe(generation, seconds)`` after every collection, until cancelled."""
    timer = _PauseTimer(observe)
    gc.callbacks.append(timer)
    try:
        await asyncio.get_running_loop().create_future()  # never set: runs until cancelled
    finally:
        gc.callbacks.remove(timer)
