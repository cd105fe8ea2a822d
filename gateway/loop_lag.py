"""How late the event loop runs: every call's audio waits at least this long behind whatever the loop
is doing, so it is the one figure that says whether a process keeps up.

A timer on an absolute schedule: each tick is due one interval after the previous one was due, and
how late it fires is how long any callback (a frame that arrived, a reply to send) would have waited
then. 200 ticks a second cost nothing next to the frames; the gateway exports the figure as
``voicegw_event_loop_lag_seconds``, the bench's relaying simulators as ``GET /_sim/lag``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL_S = 0.005


async def watch_loop_lag(observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
    """Calls ``observe(seconds late)`` once per ``interval_s`` tick, until cancelled.

    Each tick is a bare ``call_at`` timer, not a task sleeping: no future, no task step and no
    coroutine resume per tick. Sleeping cost an idle gateway 17.3M instructions per 4 s against
    10.7M now (``voicegw bench --only cost``), and on Python 3.11 a ``getpid`` system
    call per tick, 200 a second."""
    loop = asyncio.get_running_loop()
    ticker = _Ticker(loop, observe, interval_s)
    try:
        await loop.create_future()  # only cancellation ends the probe
    finally:
        ticker.stop()


class _Ticker:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, observe: Callable[[float], None], interval_s: float
    ) -> None:
        self._loop = loop
        self._observe = observe
        self._interval = interval_s
        self._due = loop.time() + interval_s
        self._handle = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        now = loop.time()
        late = now - self._due
        self._observe(late)
        # After a stall the next tick is one interval on, not a burst of catch-up ticks.
        self._due = now + self._interval if late > self._interval else self._due + self._interval
        self._handle = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        self._handle.cancel()
