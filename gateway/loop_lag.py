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
    """Calls ``observe(seconds late)`` once per ``interval_s`` tick, until cancelled."""
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        due += interval_s
        await asyncio.sleep(max(0.0, due - loop.time()))
        now = loop.time()
        observe(now - due)
        if now - due > interval_s:
            due = now  # after a stall the next tick is one interval on, not a burst of catch-up ticks
