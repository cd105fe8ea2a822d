"""The freeze policy: live calls' objects leave the collector's view; a full collection of
everything runs only when nobody hears it, or when memory in use grew as a leak would."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator

import pytest

from gateway.gc_freeze import (
    IDLE_SLACK,
    LEAK_SLACK,
    MAX_BLOCKS_PER_CALL,
    Action,
    FreezePolicy,
    keep_calls_out_of_gc,
)


def test_freezes_only_after_new_calls() -> None:
    policy = FreezePolicy(baseline=1000, calls_seen=5)
    assert policy.on_tick(5) is Action.NOTHING
    assert policy.on_tick(7) is Action.FREEZE
    assert policy.on_tick(7) is Action.NOTHING


def test_a_full_collection_runs_at_idle_or_on_leak_like_growth() -> None:
    policy = FreezePolicy(baseline=60_000)
    assert policy.on_valve(60_000 + IDLE_SLACK, live_calls=0) is Action.NOTHING  # small growth
    assert policy.on_valve(60_000 + IDLE_SLACK + 1, live_calls=0) is Action.COLLECT_IDLE
    explained = 300 * MAX_BLOCKS_PER_CALL + LEAK_SLACK
    assert policy.on_valve(60_000 + explained, live_calls=300) is Action.NOTHING  # 300 calls' worth
    assert policy.on_valve(60_000 + explained + 1, live_calls=300) is Action.COLLECT_LEAK
    policy.collected(90_000)
    assert policy.on_valve(90_000, live_calls=0) is Action.NOTHING


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@contextlib.asynccontextmanager
async def _policy(counters: dict[str, int]) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(
        keep_calls_out_of_gc(
            lambda: counters["started"], lambda: counters["live"], freeze_every_s=0.02, valve_every_s=0.1
        )
    )
    await asyncio.sleep(0)  # the policy reads the counters as they are now
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.unfreeze()  # the rest of the test session collects as before


async def test_call_objects_are_frozen_and_an_idle_collection_frees_a_frozen_cycle() -> None:
    counters = {"started": 0, "live": 1}
    gc.collect()
    async with _policy(counters):
        call_object = _Cycle()
        probe = weakref.ref(call_object)
        # memory in use grows by at least this many blocks (an empty list is one)
        call_state: list[list[int]] = [[] for _ in range(IDLE_SLACK + 10)]
        counters["started"] += 1
        await asyncio.sleep(0.1)
        assert not any(o is call_object for o in gc.get_objects())  # frozen: collections skip it
        del call_object
        gc.collect()
        assert probe() is not None  # a frozen cycle outlives collections while calls are live...
        counters["live"] = 0
        for _ in range(50):
            await asyncio.sleep(0.02)
            if probe() is None:
                break
        assert probe() is None  # ...and is freed by the full collection once no call is live
        assert len(call_state) > IDLE_SLACK


@pytest.mark.parametrize("live", [0, 3])
async def test_nothing_is_frozen_without_new_calls(live: int) -> None:
    counters = {"started": 4, "live": live}
    gc.collect()
    async with _policy(counters):
        young = _Cycle()
        await asyncio.sleep(0.1)
        assert any(o is young for o in gc.get_objects())


async def test_start_up_freeze_after_the_policy_starts_is_not_growth() -> None:
    """serve freezes its start-up objects just after the policy task is created: the valve must not
    see them as a leak and stop live calls for a full collection (counted as frozen objects, it did)."""
    counters = {"started": 0, "live": 3}
    gc.collect()
    start_up_cycle = _Cycle()
    probe = weakref.ref(start_up_cycle)
    start_up_objects: list[list[int]] = [[] for _ in range(LEAK_SLACK + 3 * MAX_BLOCKS_PER_CALL + 10)]
    async with _policy(counters):
        gc.freeze()  # what serve_cli's start-up freeze does
        del start_up_cycle
        await asyncio.sleep(0.3)  # past two valves
        assert probe() is not None  # no full collection ran while calls were live
        assert len(start_up_objects) > LEAK_SLACK


async def test_the_valves_never_walk_the_frozen_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting the frozen set walks every frozen object: 10-14 ms at 450 live calls, heard by all."""

    def walk() -> int:
        raise AssertionError("gc.get_freeze_count() walked the frozen set")

    monkeypatch.setattr(gc, "get_freeze_count", walk)
    counters = {"started": 0, "live": 2}
    gc.collect()
    async with _policy(counters):
        for live in (2, 0):
            counters["live"] = live
            counters["started"] += 1
            grown: list[list[int]] = [[] for _ in range(LEAK_SLACK + 2 * MAX_BLOCKS_PER_CALL + 10)]
            await asyncio.sleep(0.25)  # past two valves: one full collection, leak or idle
            del grown
