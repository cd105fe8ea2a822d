"""The garbage-collection pause watcher: every collection is timed by generation, and it leaves
``gc.callbacks`` as it found it."""

from __future__ import annotations

import asyncio
import contextlib
import gc

from gateway.gc_pauses import watch_gc_pauses


async def test_each_collection_is_timed_by_generation_until_cancelled() -> None:
    pauses: list[tuple[int, float]] = []
    before = list(gc.callbacks)
    watcher = asyncio.get_running_loop().create_task(watch_gc_pauses(lambda g, s: pauses.append((g, s))))
    await asyncio.sleep(0)  # the watcher installs itself
    try:
        garbage = [[] for _ in range(50_000)]
        for item in garbage:
            item.append(item)  # cycles: only the collector frees them
        del garbage, item
        gc.collect(2)
        gc.collect(0)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    full = [s for g, s in pauses if g == 2]
    assert full and 0 < max(full) < 5.0  # walking 50k cycles takes real time, well under seconds
    assert any(g == 0 for g, _ in pauses)
    assert gc.callbacks == before
    observed = len(pauses)
    gc.collect()
    assert len(pauses) == observed  # nothing is observed once cancelled
