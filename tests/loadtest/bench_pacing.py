"""Scheduling cost of 20 ms pacing for many calls: shared Pacer vs one absolute sleep per call per frame.

Not collected by pytest. Run: ``.venv/bin/python tests/loadtest/bench_pacing.py [calls] [seconds]``.
Sends are no-ops, so the figures are the scheduling overhead alone (CPU % of one core, lateness).
"""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np

from loadtest.pacer import Pacer

FRAME = 0.020


class NoopStream:
    def __init__(self, t0: float, frames: int, lateness: list[float]) -> None:
        self.t0, self.frames, self.n, self.lateness = t0, frames, 0, lateness

    def on_due(self, due: float) -> float | None:
        self.lateness.append(time.monotonic() - due)
        self.n += 1
        return None if self.n >= self.frames else self.t0 + self.n * FRAME


async def shared_pacer(calls: int, seconds: float, tick_s: float) -> list[float]:
    pacer = Pacer(tick_s=tick_s)
    lateness: list[float] = []
    frames = int(seconds / FRAME)
    now = time.monotonic()
    for i in range(calls):
        t0 = pacer.start_time(now + (i / calls) * FRAME)  # calls spread over the 20 ms like real ones
        pacer.add(NoopStream(t0, frames, lateness), t0)
    await pacer.join()
    return lateness


async def per_call_sleeps(calls: int, seconds: float) -> list[float]:
    lateness: list[float] = []
    frames = int(seconds / FRAME)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def call(offset: float) -> None:
        t0 = start + offset
        for n in range(frames):
            due = t0 + n * FRAME
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(loop.time() - due)

    await asyncio.gather(*(call((i / calls) * FRAME) for i in range(calls)))
    return lateness


def _measure(name: str, coro_factory: object) -> None:
    cpu0, wall0 = time.process_time(), time.monotonic()
    lateness = asyncio.run(coro_factory())  # type: ignore[operator]
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    arr = np.asarray(lateness) * 1000
    print(
        f"{name:28s} cpu {100 * cpu / wall:5.1f} %  lateness p50 {np.percentile(arr, 50):.2f} "
        f"p99 {np.percentile(arr, 99):.2f} max {arr.max():.2f} ms  ({len(arr)} frames)"
    )


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    print(f"{calls} calls, {seconds} s")
    for tick in (0.001, 0.002, 0.005):
        _measure(
            f"shared pacer tick {tick * 1000:.0f} ms", lambda tick=tick: shared_pacer(calls, seconds, tick)
        )
    _measure("per-call absolute sleeps", lambda: per_call_sleeps(calls, seconds))


if __name__ == "__main__":
    main()
