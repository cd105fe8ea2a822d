"""Per-sample cost of the generator's lateness recording.

Run: .venv/bin/python tests/bench/bench_timehist.py

The generator records one lateness sample per frame per call (50 a second per call, 40,000 a second
at 800 calls), so this is on its per-frame path. Compares ``TimeHistogram.record`` with what it
replaced, ``array('f').append`` of every sample. Not collected by pytest; prints nanoseconds per
sample on this machine, and says whether the compiled build ran.
"""

from __future__ import annotations

import time
from array import array

import loadtest.timehist as timehist
from loadtest.timehist import TimeHistogram

SAMPLES = 1_000_000


VALUES = [0.3 + (i % 97) * 0.05 for i in range(1000)]  # 0.3-5 ms, like lateness


def histogram_ns(histogram: TimeHistogram) -> float:
    record = histogram.record
    start = time.perf_counter()
    for i in range(SAMPLES):
        record(i * 0.00002, VALUES[i % 1000])
    return (time.perf_counter() - start) / SAMPLES * 1e9


def array_ns(kept: array[float]) -> float:
    append = kept.append
    start = time.perf_counter()
    for i in range(SAMPLES):
        append(VALUES[i % 1000])
    return (time.perf_counter() - start) / SAMPLES * 1e9


def main() -> None:
    build = "compiled" if timehist.__file__.endswith(".so") else "pure Python"
    histogram = TimeHistogram(origin=0.0)
    kept: array[float] = array("f")
    recorded = min(histogram_ns(histogram) for _ in range(3))
    appended = min(array_ns(kept) for _ in range(3))
    print(f"TimeHistogram.record ({build}): {recorded:4.0f} ns per sample")
    print(f"array('f').append:     {appended:4.0f} ns per sample")
    kb = histogram.slots * timehist.BUCKETS * 4 / 1e3
    print(f"after {3 * SAMPLES:,} samples: the histogram holds {histogram.slots} 1-s slots, {kb:.0f} KB;")
    print(f"  the kept samples {len(kept) * 4 / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
