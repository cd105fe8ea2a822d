"""The event-loop lag probe: small while the loop is free, a blocked loop shows once, no catch-up burst."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.loop_lag import watch_loop_lag


def _block(seconds: float) -> None:
    time.sleep(seconds)  # the loop can run nothing else meanwhile


async def test_a_blocked_loop_shows_as_one_late_tick() -> None:
    late: list[float] = []
    probe = asyncio.get_running_loop().create_task(watch_loop_lag(late.append, interval_s=0.005))
    try:
        await asyncio.sleep(0.1)
        _block(0.06)
        await asyncio.sleep(0.1)
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    assert len(late) >= 20
    stalls = [x for x in late if x > 0.04]
    assert len(stalls) == 1 and stalls[0] < 0.2  # about the 60 ms it was blocked, reported once
    after = late[late.index(stalls[0]) + 1 :]
    assert after and max(after) < 0.04  # no burst of catch-up ticks, each late again
