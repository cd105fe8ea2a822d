"""Latency distributions per slot of run time, in memory that does not grow with the sample count.

The load generator measures every frame's lateness (50 a second per call) and every tone burst's
added latency (one a second per call). Keeping each sample cost about 300 bytes per call-second:
a gigabyte for a one-hour soak at 1,000 calls, and a progress line that re-sorted every sample each
second. A log-bucket histogram per second of run time costs the same at 10 calls as at 10,000.

Accuracy: buckets are ``GROWTH`` (2 %) wide, and a percentile reads as the geometric midpoint of
its bucket, so it is within 1 % of the exact sample value (HdrHistogram's trade-off); count, mean
and max are exact. Past ``MAX_SLOTS`` slots, neighbouring slots merge and the slot doubles in
length, so a day-long soak stays bounded too (about 3.4 MB per histogram at most); a time window
then resolves to whole slots.

Speed: ``record`` is on the generator's per-frame path, so it only appends the value to a pending
list (tests/bench/bench_timehist.py); when a sample falls in another slot than the pending ones, every
``FLUSH_EVERY`` samples, and before anything reads the histogram, numpy bins the list into its one
slot. Samples come in time order (the pacer's due times, replies as they arrive), so a slot is binned
about once a second or every ``FLUSH_EVERY`` samples; a sample out of order only costs an extra
flush. One slot per flush means no time is kept per sample: binning by slot had cost as much as
the values' own binning. Compiled, a list append is a native call where ``array.append`` is a
Python method call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from loadtest.stats import Summary

MIN_MS: Final = 0.01  # bucket 0 holds everything at or below this
GROWTH: Final = 1.02  # each bucket's upper bound over its lower
BUCKETS: Final = 820  # the last bucket starts past 100 s and takes everything beyond (the max stays exact)
MAX_SLOTS: Final = 1024
FLUSH_EVERY: Final = 4096  # samples binned at once: ~0.2 ms of numpy, a few times a second at 800 calls

_LOG_GROWTH: Final = math.log(GROWTH)
_NO_SLOT: Final = -(1 << 62)  # no sample pending


def bucket_of(values_ms: np.ndarray) -> np.ndarray:
    """The bucket of each sample: (MIN_MS * GROWTH**(b-1), MIN_MS * GROWTH**b] for b >= 1, 0 below."""
    ratio = np.maximum(values_ms, MIN_MS) / MIN_MS
    return np.minimum(np.ceil(np.log(ratio) / _LOG_GROWTH), BUCKETS - 1).astype(np.intp)


def bucket_values() -> np.ndarray:
    """What each bucket reads as: its geometric midpoint (bucket 0: zero)."""
    b = np.arange(BUCKETS, dtype=np.float64)
    values = MIN_MS * GROWTH ** (b - 0.5)
    values[0] = 0.0
    return values


_BUCKET_VALUES: Final = bucket_values()


class TimeHistogram:
    """Samples (ms) at monotonic times, bucketed per ``slot_s`` of run time since ``origin``."""

    __slots__ = (
        "_cells", "_counts", "_maxes", "_pending_at", "_pending_ms", "_pending_slot", "_slots", "_sums",
        "origin", "slot_s",
    )  # fmt: skip

    def __init__(self, origin: float, slot_s: float = 1.0) -> None:
        self.origin = origin
        self.slot_s = slot_s
        # np.zeros maps zero pages: only the slots a run reaches take memory.
        self._cells = np.zeros((MAX_SLOTS, BUCKETS), dtype=np.uint32)
        self._counts = np.zeros(MAX_SLOTS, dtype=np.int64)
        self._sums = np.zeros(MAX_SLOTS, dtype=np.float64)
        self._maxes = np.full(MAX_SLOTS, -math.inf)
        self._slots = 0  # slots in use: the last one with a sample, plus one
        self._pending_ms: list[float] = []  # values of samples all in one slot: ``_pending_slot``
        self._pending_slot = _NO_SLOT
        self._pending_at = 0.0  # a time in that slot (the slot is recomputed from it if slots merge)

    def record(self, at: float, value_ms: float) -> None:
        """Adds one sample taken at ``at`` (same clock as ``origin``)."""
        slot = self._slot_of(at)
        if slot != self._pending_slot:
            self._flush()
            self._pending_slot = slot
            self._pending_at = at
        pending = self._pending_ms
        pending.append(value_ms)
        if len(pending) >= FLUSH_EVERY:
            self._flush()

    @property
    def count(self) -> int:
        self._flush()
        return int(self._counts[: self._slots].sum())

    @property
    def slots(self) -> int:
        self._flush()
        return self._slots

    def summary(self, start_s: float = 0.0, end_s: float = math.inf) -> Summary:
        """The distribution of the samples in the slots lying wholly within [start_s, end_s) of run time."""
        self._flush()
        first, stop = self._slot_range(start_s, end_s)
        count = int(self._counts[first:stop].sum())
        if count == 0:
            return Summary()
        top = float(self._maxes[first:stop].max())
        merged = self._cells[first:stop].sum(axis=0)
        p50, p95, p99 = _percentiles(merged, count, top, (0.50, 0.95, 0.99))
        return Summary(count, float(self._sums[first:stop].sum()) / count, p50, p95, p99, top)

    def series(self) -> dict[str, list[float]]:
        """Per slot: its start (s), sample count, p50, p99 and max; what the over-time plot draws."""
        self._flush()
        out: dict[str, list[float]] = {"t": [], "count": [], "p50": [], "p99": [], "max": []}
        for slot in range(self._slots):
            count = int(self._counts[slot])
            if not count:
                continue
            top = float(self._maxes[slot])
            p50, p99 = _percentiles(self._cells[slot], count, top, (0.50, 0.99))
            out["t"].append(round(slot * self.slot_s, 3))
            out["count"].append(count)
            out["p50"].append(round(p50, 3))
            out["p99"].append(round(p99, 3))
            out["max"].append(round(top, 3))
        return out

    def buckets(self) -> list[tuple[float, int]]:
        """The whole run's non-empty buckets as (value the bucket reads as, samples); for a histogram plot."""
        self._flush()
        merged = self._cells[: self._slots].sum(axis=0)
        return [(float(_BUCKET_VALUES[b]), int(merged[b])) for b in np.flatnonzero(merged)]

    def to_json(self) -> dict[str, Any]:
        return {
            "slot_s": self.slot_s,
            "bucket_growth": GROWTH,
            "summary": self.summary().to_json(),
            "per_slot": self.series(),
            "buckets": [[round(v, 4), n] for v, n in self.buckets()],
        }

    def _slot_range(self, start_s: float, end_s: float) -> tuple[int, int]:
        first = max(0, math.ceil(start_s / self.slot_s - 1e-9))
        stop = self._slots if math.isinf(end_s) else math.floor(end_s / self.slot_s + 1e-9)
        return first, max(first, min(stop, self._slots))

    def _flush(self) -> None:
        """Bins the pending samples into their slot: a few numpy calls, whatever their number."""
        pending = self._pending_ms
        if not pending:
            return
        slot = self._slot_of(self._pending_at)
        while slot >= MAX_SLOTS:
            self._merge_pairs()
            slot = self._slot_of(self._pending_at)
        values = np.array(pending, dtype=np.float64)
        self._cells[slot] += np.bincount(bucket_of(values), minlength=BUCKETS).astype(np.uint32)
        self._counts[slot] += len(pending)
        self._sums[slot] += float(values.sum())
        self._maxes[slot] = max(float(self._maxes[slot]), float(values.max()))
        self._slots = max(self._slots, slot + 1)
        self._pending_ms = []
        self._pending_slot = _NO_SLOT

    def _slot_of(self, at: float) -> int:
        return max(0, int((at - self.origin) / self.slot_s))

    def _merge_pairs(self) -> None:
        """Halves the time resolution: slots 2k and 2k+1 become slot k."""
        half = MAX_SLOTS // 2
        self._cells[:half] = self._cells[0::2] + self._cells[1::2]
        self._cells[half:] = 0
        self._counts[:half] = self._counts[0::2] + self._counts[1::2]
        self._counts[half:] = 0
        self._sums[:half] = self._sums[0::2] + self._sums[1::2]
        self._sums[half:] = 0.0
        self._maxes[:half] = np.maximum(self._maxes[0::2], self._maxes[1::2])
        self._maxes[half:] = -math.inf
        self._slots = (self._slots + 1) // 2
        self.slot_s *= 2


def _percentiles(counts: np.ndarray, total: int, top: float, qs: tuple[float, ...]) -> list[float]:
    """Nearest-rank percentiles of a bucket-count row: the bucket holding the ceil(q * total)-th sample,
    read as its midpoint and never above the exact max."""
    cumulative = np.cumsum(counts)
    out = []
    for q in qs:
        rank = max(1, math.ceil(q * total))
        b = int(np.searchsorted(cumulative, rank))
        out.append(min(float(_BUCKET_VALUES[b]), top))
    return out


@dataclass(frozen=True)
class RunHistograms:
    """What a load run measures over time, shared by all its calls: added latency and play-out
    latency per returned tone burst, the generator's own lateness per frame sent."""

    latency: TimeHistogram
    playout: TimeHistogram
    lateness: TimeHistogram

    @classmethod
    def starting(cls, origin: float) -> RunHistograms:
        return cls(TimeHistogram(origin), TimeHistogram(origin), TimeHistogram(origin))
