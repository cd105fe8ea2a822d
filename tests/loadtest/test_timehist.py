"""The generator's time histograms: accurate percentiles, exact count/mean/max, bounded memory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtest.timehist import BUCKETS, FLUSH_EVERY, GROWTH, MAX_SLOTS, MIN_MS, TimeHistogram, bucket_of


def test_percentiles_are_within_one_percent_and_count_mean_max_exact() -> None:
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=0.5, sigma=1.0, size=20_000)  # ms, a long right tail like lateness
    h = TimeHistogram(origin=100.0)
    for i, v in enumerate(samples):
        h.record(100.0 + i / 1000, float(v))  # 20 s of samples, 1,000 a second
    s = h.summary()
    assert s.count == samples.size
    assert s.mean == pytest.approx(samples.mean(), rel=1e-9)
    assert s.max == samples.max()
    for q, got in ((50, s.p50), (95, s.p95), (99, s.p99)):
        exact = np.percentile(samples, q, method="inverted_cdf")  # nearest rank, as the histogram
        assert got == pytest.approx(exact, rel=(GROWTH - 1) / 2 + 1e-9)


def test_memory_grows_with_run_time_not_with_samples() -> None:
    h = TimeHistogram(origin=0.0)
    for i in range(100_000):
        h.record(0.5, i / 1000)
        assert len(h._pending_ms) < FLUSH_EVERY  # samples wait in the buffer only until the next flush
    assert h.slots == 1 and h.count == 100_000  # one slot of bucket counts holds them all
    assert h.summary().max == 99.999


def test_samples_out_of_time_order_land_in_their_own_slots() -> None:
    """Binning goes by one slot at a time; a sample from another slot, earlier or later, is not lost
    or misplaced, only binned on its own."""
    h = TimeHistogram(origin=0.0)
    for at, v in ((0.1, 1.0), (1.2, 2.0), (0.9, 3.0), (1.3, 4.0), (-0.5, 5.0), (2.0, 6.0), (0.2, 7.0)):
        h.record(at, v)
    series = h.series()
    assert series["count"] == [4, 2, 1] and series["max"] == [7.0, 4.0, 6.0]
    assert h.summary().count == 7 and h.summary().mean == pytest.approx(28.0 / 7)


def test_a_long_run_merges_slots_instead_of_growing_past_the_cap() -> None:
    h = TimeHistogram(origin=0.0)
    seconds = 3 * MAX_SLOTS
    for t in range(seconds):
        h.record(t + 0.5, 2.0 if t != 1234 else 900.0)
    assert h.slots <= MAX_SLOTS and h.slot_s == 4.0
    s = h.summary()
    assert s.count == seconds and s.max == 900.0 and s.p50 == pytest.approx(2.0, rel=0.01)
    # a window resolves to the whole slots inside it: [1232, 1236) holds the outlier, [1236, 1300) not
    assert h.summary(1232, 1236).max == 900.0 and h.summary(1232, 1236).count == 4
    assert h.summary(1236, 1300).max == 2.0


def test_a_window_takes_the_slots_wholly_inside_it() -> None:
    h = TimeHistogram(origin=10.0)
    for t, v in ((10.2, 5.0), (11.9, 6.0), (12.0, 7.0), (14.99, 8.0)):
        h.record(t, v)
    assert h.summary(1.0, 4.0).count == 2  # slots 1 and 2: 6.0 and 7.0; slot 4 ends past the window
    assert h.summary(0.5, 5.0).max == 8.0  # slot 0 starts before the window
    assert h.summary(0.5, 5.0).count == 3
    assert h.summary(7.0, 9.0).count == 0 and h.summary(7.0, 9.0).p99 == 0.0


def test_bucket_edges() -> None:
    assert bucket_of(np.array([-3.0, 0.0, MIN_MS, MIN_MS * 1.001, 1e9])).tolist() == [0, 0, 0, 1, BUCKETS - 1]
    assert MIN_MS * GROWTH ** (BUCKETS - 1) > 100_000  # the last bucket starts past 100 s
    values = np.array([0.013, 0.5, 1.0, 4.999, 5.0, 20.0, 1234.5])
    for v, b in zip(values, bucket_of(values), strict=True):
        assert MIN_MS * GROWTH ** (b - 1) < v * (1 + 1e-12) and v <= MIN_MS * GROWTH**b * (1 + 1e-12)
    h = TimeHistogram(origin=0.0)
    h.record(0.0, 250_000.0)  # beyond the last bucket: still counted, max still exact
    assert h.summary().max == 250_000.0 and h.summary().p99 <= 250_000.0


def test_series_and_json_describe_each_second() -> None:
    h = TimeHistogram(origin=0.0)
    for t in range(3):
        for k in range(100):
            h.record(t + k / 100, 1.0 + t)
    series = h.series()
    assert series["t"] == [0.0, 1.0, 2.0] and series["count"] == [100, 100, 100]
    assert series["max"] == [1.0, 2.0, 3.0]
    assert all(math.isclose(p, m, rel_tol=0.01) for p, m in zip(series["p99"], series["max"], strict=True))
    data = h.to_json()
    assert data["summary"]["count"] == 300 and data["slot_s"] == 1.0
    assert sum(n for _, n in data["buckets"]) == 300
