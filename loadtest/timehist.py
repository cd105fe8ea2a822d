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
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.stats import Summary

MIN_MS = 0.01  # bucket 0 holds everything at or below this
GROWTH = 1.02  # each bucket's upper bound over its lower
BUCKETS = 820  # the last bucket starts past 100 s and takes everything beyond (the max stays exact)
MAX_SLOTS = 1024

_LOG_GROWTH = math.log(GROWTH)
_ZERO_ROW = array("I", bytes(4 * BUCKETS))


def bucket_of(value_ms: float) -> int:
    """The bucket a sample lands in: (MIN_MS * GROWTH**(b-1), MIN_MS * GROWTH**b] for b >= 1."""
    if value_ms <= MIN_MS:
        return 0
    b = math.ceil(math.log(value_ms / MIN_MS) / _LOG_GROWTH)
    return b if b < BUCKETS else BUCKETS - 1


def bucket_values() -> np.ndarray:
    """What each bucket reads as: its geometric midpoint (bucket 0: zero)."""
    b = np.arange(BUCKETS, dtype=np.float64)
    values = MIN_MS * GROWTH ** (b - 0.5)
    values[0] = 0.0
    return values


_BUCKET_VALUES = bucket_values()


class TimeHistogram:
    """Samples (ms) at monotonic times, bucketed per ``slot_s`` of run time since ``origin``."""

    __slots__ = ("_cells", "_counts", "_maxes", "_sums", "origin", "slot_s")

    def __init__(self, origin: float, slot_s: float = 1.0) -> None:
        self.origin = origin
        self.slot_s = slot_s
        self._cells = array("I")  # slot s, bucket b at s * BUCKETS + b
        self._counts: list[int] = []
        self._sums: list[float] = []
        self._maxes: list[float] = []

    def record(self, at: float, value_ms: float) -> None:
        """Adds one sample taken at ``at`` (same clock as ``origin``); constant time and memory."""
        slot = int((at - self.origin) / self.slot_s)
        if slot < 0:
            slot = 0
        if slot >= len(self._counts):
            slot = self._grow(at, slot)
        self._cells[slot * BUCKETS + bucket_of(value_ms)] += 1
        self._counts[slot] += 1
        self._sums[slot] += value_ms
        if value_ms > self._maxes[slot]:
            self._maxes[slot] = value_ms

    @property
    def count(self) -> int:
        return sum(self._counts)

    @property
    def slots(self) -> int:
        return len(self._counts)

    def summary(self, start_s: float = 0.0, end_s: float = math.inf) -> Summary:
        """The distribution of the samples in the slots lying wholly within [start_s, end_s) of run time."""
        first, stop = self._slot_range(start_s, end_s)
        count = sum(self._counts[first:stop])
        if count == 0:
            return Summary()
        merged = self._rows()[first:stop].sum(axis=0)
        top = max(self._maxes[first:stop])
        p50, p95, p99 = _percentiles(merged, count, top, (0.50, 0.95, 0.99))
        return Summary(count, sum(self._sums[first:stop]) / count, p50, p95, p99, top)

    def series(self) -> dict[str, list[float]]:
        """Per slot: its start (s), sample count, p50, p99 and max; what the over-time plot draws."""
        rows = self._rows()
        out: dict[str, list[float]] = {"t": [], "count": [], "p50": [], "p99": [], "max": []}
        for slot, count in enumerate(self._counts):
            if not count:
                continue
            p50, p99 = _percentiles(rows[slot], count, self._maxes[slot], (0.50, 0.99))
            out["t"].append(round(slot * self.slot_s, 3))
            out["count"].append(count)
            out["p50"].append(round(p50, 3))
            out["p99"].append(round(p99, 3))
            out["max"].append(round(self._maxes[slot], 3))
        return out

    def buckets(self) -> list[tuple[float, int]]:
        """The whole run's non-empty buckets as (value the bucket reads as, samples); for a histogram plot."""
        merged = self._rows().sum(axis=0)
        return [(float(_BUCKET_VALUES[b]), int(merged[b])) for b in np.flatnonzero(merged)]

    def to_json(self) -> dict[str, Any]:
        return {
            "slot_s": self.slot_s,
            "bucket_growth": GROWTH,
            "summary": self.summary().to_json(),
            "per_slot": self.series(),
            "buckets": [[round(v, 4), n] for v, n in self.buckets()],
        }

    def _rows(self) -> np.ndarray:
        return np.frombuffer(self._cells, dtype=np.uint32).reshape(-1, BUCKETS)

    def _slot_range(self, start_s: float, end_s: float) -> tuple[int, int]:
        first = max(0, math.ceil(start_s / self.slot_s - 1e-9))
        stop = len(self._counts) if math.isinf(end_s) else math.floor(end_s / self.slot_s + 1e-9)
        return first, max(first, min(stop, len(self._counts)))

    def _grow(self, at: float, slot: int) -> int:
        """Adds slots up to ``slot`` (past MAX_SLOTS, halving the resolution first); returns ``at``'s slot."""
        while slot >= MAX_SLOTS:
            self._merge_pairs()
            slot = int((at - self.origin) / self.slot_s)
        for _ in range(slot + 1 - len(self._counts)):
            self._cells.extend(_ZERO_ROW)
            self._counts.append(0)
            self._sums.append(0.0)
            self._maxes.append(0.0)
        return slot

    def _merge_pairs(self) -> None:
        if len(self._counts) % 2:
            self._cells.extend(_ZERO_ROW)
            self._counts.append(0)
            self._sums.append(0.0)
            self._maxes.append(0.0)
        rows = self._rows()
        self._cells = array("I", (rows[0::2] + rows[1::2]).tobytes())
        pairs = range(0, len(self._counts), 2)
        self._counts = [self._counts[i] + self._counts[i + 1] for i in pairs]
        self._sums = [self._sums[i] + self._sums[i + 1] for i in pairs]
        self._maxes = [max(self._maxes[i], self._maxes[i + 1]) for i in pairs]
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
