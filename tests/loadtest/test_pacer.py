"""The shared pacer keeps every call on its absolute 20 ms schedule, under a simulated clock."""

from __future__ import annotations

import asyncio
import random

from loadtest.pacer import Pacer

FRAME = 0.020


class FakeClock:
    """Simulated time: sleeping advances it by the requested delay plus scheduler-like oversleep."""

    def __init__(self, seed: int, stall_every: int = 0) -> None:
        self.now = 1000.0
        self._rng = random.Random(seed)
        self._sleeps = 0
        self._stall_every = stall_every

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float, wake: asyncio.Future[None]) -> None:
        self._sleeps += 1
        oversleep = self._rng.uniform(0, 0.0015)
        if self._stall_every and self._sleeps % self._stall_every == 0:
            oversleep += 0.150  # the generator's process was descheduled
        self.now += delay + oversleep
        await asyncio.sleep(0)


class RecordingStream:
    def __init__(self, clock: FakeClock, t0: float, frames: int, work_s: float = 0.0) -> None:
        self.clock = clock
        self.t0 = t0
        self.frames = frames
        self.work_s = work_s
        self.due: list[float] = []
        self.sent: list[float] = []

    def on_due(self, due: float) -> float | None:
        self.due.append(due)
        self.sent.append(self.clock())
        self.clock.now += self.work_s  # sending costs time, which later streams see as lateness
        n = len(self.due)
        return None if n >= self.frames else self.t0 + n * FRAME


async def _run(clock: FakeClock, streams_at: list[float], frames: int) -> list[RecordingStream]:
    pacer = Pacer(tick_s=0.001, clock=clock, sleep=clock.sleep)
    streams = []
    for offset in streams_at:
        t0 = pacer.start_time(clock() + offset)
        s = RecordingStream(clock, t0, frames, work_s=0.00002)
        pacer.add(s, t0)
        streams.append(s)
    await pacer.join()
    return streams


async def test_sixty_simulated_seconds_without_drift() -> None:
    clock = FakeClock(seed=1)
    frames = 3000  # 60 s of 20 ms frames
    streams = await _run(clock, [0.0, 0.0073, 0.0139], frames)
    for s in streams:
        assert len(s.sent) == frames
        # Every frame is due exactly on the absolute grid t0 + n*20ms: nothing accumulates.
        assert s.due == [s.t0 + n * FRAME for n in range(frames)]
        lateness = [sent - due for sent, due in zip(s.sent, s.due, strict=True)]
        assert min(lateness) >= 0.0
        assert max(lateness) < 0.002
        # The last frame leaves 59.98 s after the first, to within the oversleep: no drift.
        assert abs((s.sent[-1] - s.sent[0]) - (frames - 1) * FRAME) < 0.002
    # Calls starting at different instants keep distinct grid phases.
    assert len({round((s.t0 * 1000) % 20, 6) for s in streams}) == 3


async def test_stall_is_caught_up_then_schedule_resumes() -> None:
    clock = FakeClock(seed=2, stall_every=500)
    frames = 3000
    (s,) = await _run(clock, [0.0], frames)
    assert s.due == [s.t0 + n * FRAME for n in range(frames)]
    lateness = [sent - due for sent, due in zip(s.sent, s.due, strict=True)]
    stalls = [i for i, late in enumerate(lateness) if late > 0.1]
    assert stalls, "the simulated stall should be visible as lateness"
    for i in stalls:
        # Right after a stall the backlog goes out at once; a few frames later it is back on time.
        assert max(lateness[i + 10 : i + 20]) < 0.002


async def test_added_stream_interrupts_a_long_sleep() -> None:
    pacer = Pacer(tick_s=0.001)
    loop = asyncio.get_running_loop()

    class Once:
        def __init__(self) -> None:
            self.at = 0.0
            self.done = asyncio.Event()

        def on_due(self, due: float) -> float | None:
            self.at = loop.time()
            self.done.set()
            return None

    far, near = Once(), Once()
    pacer.add(far, pacer.clock() + 5.0)
    await asyncio.sleep(0.01)
    start = loop.time()
    pacer.add(near, pacer.start_time())
    await asyncio.wait_for(near.done.wait(), 2.0)
    assert near.at - start < 1.0
    await pacer.aclose()
