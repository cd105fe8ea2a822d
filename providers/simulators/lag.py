"""How late a simulator's event loop runs: the load side's own lateness, like the generator's.

``voicegw bench`` puts a relaying simulator on the load generator's core. When that core is
overloaded the simulator answers late, and the delay reaches the caller's side as added latency
that the gateway did not cause. A timer on an absolute schedule measures it: any frame that
arrived meanwhile waited at least as long as the timer was late.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import numpy as np

INTERVAL_S = 0.005
KEPT = 65_536  # samples between two reads (5.5 minutes at 200 a second); older ones drop


class LoopLag:
    """``run()`` ticks every ``INTERVAL_S`` on an absolute schedule and keeps how late each tick was;
    ``take()`` summarises the ticks since the previous ``take()``."""

    def __init__(self) -> None:
        self._late_ms: collections.deque[float] = collections.deque(maxlen=KEPT)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += INTERVAL_S
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            self._late_ms.append((now - due) * 1000.0)
            if now - due > INTERVAL_S:
                due = now  # after a stall the next tick is one interval on, not a burst of catch-up ticks

    def take(self) -> dict[str, Any]:
        late = np.fromiter(self._late_ms, dtype=np.float64, count=len(self._late_ms))
        self._late_ms.clear()
        if not late.size:
            return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
        p50, p99 = np.percentile(late, [50, 99])
        return {
            "count": int(late.size),
            "p50_ms": round(float(p50), 3),
            "p99_ms": round(float(p99), 3),
            "max_ms": round(float(late.max()), 3),
        }
