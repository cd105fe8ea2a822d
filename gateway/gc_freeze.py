"""Keeps live calls' objects out of the garbage collector's full collections.

A full (generation 2) collection walks every object the collector tracks, on the event loop's
thread: about 30 ms at 300 relayed calls (~144 tracked objects each), a stall every live call hears
at once (``voicegw_gc_pause_seconds``). CPython runs one after ten young (generation 1) collections,
which call set-ups bring every few hundred calls. A finished call is freed by reference counting,
not by the collector (``tests/e2e/test_call_garbage.py``), so its objects never need walking: once
a second, if calls were set up since the last time, ``gc.freeze()`` (constant time) moves everything
tracked into the permanent generation, which collections skip. A full collection then walks only
what was made since.

A mistake would cost memory, never correctness: a cycle that forms among frozen objects stays until
a full collection of everything. Two valves run one: when no call is live (nobody hears the pause),
if memory in use grew since the last one; and, live calls or not, when it grew by more than the live
calls can explain, as a leak would (logged). ``VOICEGW_GC_FREEZE=0`` turns the policy off.

Growth is read from ``sys.getallocatedblocks()`` (Python's small-object blocks in use: every
object of up to 512 bytes is one, nearly every tracked object among them), which visits pool
headers only: ~0.4 ms at 145 MB. Counting the frozen set instead
(``gc.get_freeze_count()``) walks every frozen object; under load, with the caches cold, that took
10-14 ms at 450 relayed calls, a stall every live call heard once per valve (measured with py-spy
against the bench's per-second latency maxima, 2026-12-07).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

log = logging.getLogger(__name__)

FREEZE_EVERY_S = 1.0
VALVE_EVERY_S = 10.0
# A live call holds ~200-260 blocks (measured: echo ~200, relayed ~240, transcoded ~260); growth
# beyond this many per call plus the slack is a leak. All in allocated blocks.
MAX_BLOCKS_PER_CALL = 1000
LEAK_SLACK = 50_000
# Growth at idle worth a full collection: after hundreds of calls caches and pools stay up to
# ~6,000 blocks larger (measured); a leaked call would hold ~240.
IDLE_SLACK = 10_000


class Action(Enum):
    NOTHING = "nothing"
    FREEZE = "freeze"
    COLLECT_IDLE = "collect_idle"
    COLLECT_LEAK = "collect_leak"


@dataclass(slots=True)
class FreezePolicy:
    """What to do on each tick, from counts only (no gc calls): the shell below does it."""

    baseline: int  # allocated blocks right after the last full collection
    calls_seen: int = 0  # calls set up, as of the last freeze

    def on_tick(self, calls_started: int) -> Action:
        """Every ``FREEZE_EVERY_S``: freeze when calls were set up since the last freeze."""
        if calls_started == self.calls_seen:
            return Action.NOTHING
        self.calls_seen = calls_started
        return Action.FREEZE

    def on_valve(self, blocks: int, live_calls: int) -> Action:
        """Every ``VALVE_EVERY_S``, given the allocated blocks: a full collection, or nothing."""
        grown = blocks - self.baseline
        if live_calls == 0 and grown > IDLE_SLACK:
            return Action.COLLECT_IDLE
        if grown > live_calls * MAX_BLOCKS_PER_CALL + LEAK_SLACK:
            return Action.COLLECT_LEAK
        return Action.NOTHING

    def collected(self, blocks: int) -> None:
        self.baseline = blocks


def _collect_everything() -> tuple[int, int, float]:
    """Unfreeze, collect, freeze again: (objects freed, blocks after, seconds it took)."""
    started = time.perf_counter()
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    return freed, sys.getallocatedblocks(), time.perf_counter() - started


async def keep_calls_out_of_gc(
    calls_started: Callable[[], int],
    live_calls: Callable[[], int],
    *,
    freeze_every_s: float = FREEZE_EVERY_S,
    valve_every_s: float = VALVE_EVERY_S,
) -> None:
    """Runs the policy until cancelled; then leaves everything frozen (start-up froze it too)."""
    policy = FreezePolicy(baseline=sys.getallocatedblocks(), calls_seen=calls_started())
    ticks_per_valve = max(1, round(valve_every_s / freeze_every_s))
    tick = 0
    while True:
        await asyncio.sleep(freeze_every_s)
        if policy.on_tick(calls_started()) is Action.FREEZE:
            gc.freeze()
        tick += 1
        if tick % ticks_per_valve:
            continue
        blocks, live = sys.getallocatedblocks(), live_calls()
        action = policy.on_valve(blocks, live)
        if action is Action.NOTHING:
            continue
        freed, after, seconds = _collect_everything()
        policy.collected(after)
        level = logging.INFO if action is Action.COLLECT_IDLE else logging.WARNING
        log.log(
            level,
            "full garbage collection (%s, %d live calls): %d blocks before, %d after; %d freed in %.1f ms",
            "idle" if action is Action.COLLECT_IDLE else "memory grew beyond the live calls",
            live,
            blocks,
            after,
            freed,
            seconds * 1000,
        )
