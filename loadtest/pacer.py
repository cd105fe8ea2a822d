"""One shared ticker that sends every call's 20 ms frames on an absolute schedule.

Hundreds of calls each sleeping 50 times a second cost a timer, a task switch and a wake-up per frame.
Instead each call's frame ``n`` is due at ``t0 + n * 20 ms`` (computed, never accumulated, so there is no
drift), ``t0`` is snapped to a grid of ``tick_s`` so calls share wake-ups, and one task sleeps until the
earliest due frame and sends everything due. Calls start on different grid points, which spreads the
load like real calls do.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class PacedStream(Protocol):
    def on_due(self, due: float) -> float | None:
        """Sends what is due at ``due``; returns the next due time, or None when finished.

        Synchronous: a coroutine per frame per call was a measurable share of the generator's CPU,
        and a send that could wait would stall every other call on the ticker.
        """


Clock = Callable[[], float]
Sleep = Callable[[float, "asyncio.Future[None]"], Awaitable[None]]


async def _loop_sleep(delay: float, wake: asyncio.Future[None]) -> None:
    """Sleeps ``delay`` seconds unless ``wake`` is resolved first (a stream was added)."""
    handle = asyncio.get_running_loop().call_later(delay, _resolve, wake)
    try:
        await wake
    finally:
        handle.cancel()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Pacer:
    """Drives many :class:`PacedStream`s from one task; starts on the first ``add`` and idles when empty.

    Streams wait in per-tick buckets (lists keyed by grid index, with a heap of the indices in use):
    a frame costs a list append, not a push and a pop on a heap of every stream.
    """

    def __init__(
        self, tick_s: float = 0.002, clock: Clock = time.monotonic, sleep: Sleep = _loop_sleep
    ) -> None:
        self.tick_s = tick_s
        self.clock = clock
        self._sleep = sleep
        self._base = clock()
        self._buckets: dict[int, list[tuple[float, PacedStream]]] = {}
        self._keys: list[int] = []  # heap of the bucket indices in use
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self.wakeups = 0

    def start_time(self, not_before: float | None = None) -> float:
        """The first grid point at or after ``not_before`` (default: now), a stream's ``t0``."""
        t = self.clock() if not_before is None else not_before
        return self._base + math.ceil((t - self._base) / self.tick_s) * self.tick_s

    def add(self, stream: PacedStream, first_due: float) -> None:
        self._put(first_due, stream)
        if self._wake is not None:
            _resolve(self._wake)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loadtest-pacer")

    def _put(self, due: float, stream: PacedStream) -> None:
        # The grid point at or after ``due``; the epsilon keeps t0 + n * 20 ms, on the grid up to
        # rounding, in its own tick. The ceiling by hand: compiled, int() of a float is native and
        # math.ceil a Python-level call.
        grid = (due - self._base) / self.tick_s - 1e-6
        key = int(grid)
        if key < grid:
            key += 1
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [(due, stream)]
            heapq.heappush(self._keys, key)
        else:
            bucket.append((due, stream))

    async def _run(self) -> None:
        keys = self._keys
        buckets = self._buckets
        clock = self.clock
        loop = asyncio.get_running_loop()
        while keys:
            tick_at = self._base + keys[0] * self.tick_s
            delay = tick_at - clock()
            if delay > 0:
                self._wake = loop.create_future()
                await self._sleep(delay, self._wake)
                self._wake = None
                continue
            self.wakeups += 1
            # Every tick that is due forms one batch: a stream that is behind sends one frame per
            # batch, and the loop gets control back between batches, so replies are read even
            # while catching up (and catching up never waits a loop iteration per tick).
            now_key = (clock() - self._base) / self.tick_s
            batch = [buckets.pop(heapq.heappop(keys))]
            while keys and keys[0] <= now_key:
                batch.append(buckets.pop(heapq.heappop(keys)))
            for bucket in batch:
                for due, stream in bucket:
                    try:
                        next_due = stream.on_due(due)
                    except Exception:
                        # A broken stream must not stop the others; it reports its own failure.
                        log.exception("paced stream failed; dropping it")
                        continue
                    if next_due is not None:
                        self._put(next_due, stream)  # a native call when compiled; a bound alias is not
            if keys and self._base + keys[0] * self.tick_s <= clock():
                await asyncio.sleep(0)

    async def join(self) -> None:
        """Waits until every stream has finished (the ticker goes idle)."""
        if self._task is not None:
            await self._task

    async def aclose(self) -> None:
        """Stops driving streams (used at the end of a run)."""
        self._buckets.clear()
        self._keys.clear()
        if self._task is not None:
            if self._wake is not None:
                _resolve(self._wake)
            await asyncio.gather(self._task, return_exceptions=True)


_default_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def default_pacer() -> Pacer:
    """The event loop's shared pacer, for callers that place calls without bringing their own."""
    loop = asyncio.get_running_loop()
    pacer = _default_pacers.get(loop)
    if pacer is None:
        pacer = _default_pacers[loop] = Pacer()
    return pacer
