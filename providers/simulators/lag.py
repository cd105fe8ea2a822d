"""How late a simulator's event loop runs: the load side's own lateness, like the generator's.

``voicegw bench`` puts a relaying simulator on the load generator's core. When that core is
overloaded the simulator answers late, and the delay reaches the caller's side as added latency
that the gateway did not cause. ``gateway.loop_lag`` measures it; this keeps the ticks between two
reads, for an exact p99 over the bench's hold window.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from gateway.loop_lag import watch_loop_lag

KEPT = 65_536  # samples between two reads (5.5 minutes at 200 a second); older ones drop


class LoopLag:
    """``run()`` keeps how late each tick was; ``take()`` summarises the ticks since the previous one."""

    def __init__(self) -> None:
        self._late_ms: collections.deque[float] = collections.deque(maxlen=KEPT)

    async def run(self) -> None:
        await watch_loop_lag(lambda late_s: self._late_ms.append(late_s * 1000.0))

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
