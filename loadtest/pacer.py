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
import itertools
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
    """Drives many :class:`PacedStream`s from one task; starts on the first ``add`` and idles when empty."""

    def __init__(
        self, tick_s: float = 0.002, clock: Clock = time.monotonic, sleep: Sleep = _loop_sleep
    ) -> None:
        self.tick_s = tick_s
        self.clock = clock
        self._sleep = sleep
        self._base = clock()
        self._heap: list[tuple[float, int, PacedStream]] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self.wakeups = 0

    def start_time(self, not_before: float | None = None) -> float:
        """The first grid point at or after ``not_before`` (default: now), a stream's ``t0``."""
        t = self.clock() if not_before is None else not_before
        return self._base + math.ceil((t - self._base) / self.tick_s) * self.tick_s

    def add(self, stream: PacedStream, first_due: float) -> None:
        heapq.heappush(self._heap, (first_due, next(self._seq), stream))
        if self._wake is not None:
            _resolve(self._wake)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loadtest-pacer")

    async def _run(self) -> None:
        heap = self._heap
        clock = self.clock
        loop = asyncio.get_running_loop()
        while heap:
            delay = heap[0][0] - clock()
            if delay > 0:
                self._wake = loop.create_future()
                await self._sleep(delay, self._wake)
                self._wake = None
                continue
            self.wakeups += 1
            now = clock()
            # Pop the whole batch first: a stream that is behind sends one frame per batch, and the
            # loop gets control back between batches, so replies are read even while catching up.
            ready = []
            while heap and heap[0][0] <= now:
                ready.append(heapq.heappop(heap))
            for due, seq, stream in ready:
                try:
                    next_due = stream.on_due(due)
                except Exception:
                    # A broken stream must not stop the others; it reports its own failure.
                    log.exception("paced stream failed; dropping it")
                    continue
                if next_due is not None:
                    heapq.heappush(heap, (next_due, seq, stream))
            if heap and heap[0][0] <= clock():
                await asyncio.sleep(0)

    async def join(self) -> None:
        """Waits until every stream has finished (the ticker goes idle)."""
        if self._task is not None:
            await self._task

    async def aclose(self) -> None:
        """Stops driving streams (used at the end of a run)."""
        self._heap.clear()
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
