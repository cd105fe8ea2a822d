"""Prometheus metrics, collected at scrape time from plain counters.

The hot path only does ``frames.received += 1`` (``gateway/frame_counters.py``): no locks, no
label lookups. A custom
collector turns the counters into Prometheus families when ``/metrics`` is scraped.
"""

from __future__ import annotations

import bisect
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from gateway.frame_counters import FrameCounters

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Event-loop lag: a frame is 20 ms, so what matters is the few-millisecond range.
LOOP_LAG_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclass(slots=True)
class Histogram:
    """Cumulative-bucket histogram that costs one bisect per observation."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations up to it), ending with (inf, all): Prometheus's bucket form."""
        out, acc = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            acc += count
            out.append((bound, acc))
        return out

    def family(self, name: str, doc: str, labels: dict[str, str] | None = None) -> HistogramMetricFamily:
        labels = labels or {}
        fam = HistogramMetricFamily(name, doc, labels=list(labels))
        buckets = [(str(b) if b != float("inf") else "+Inf", n) for b, n in self.cumulative()]
        fam.add_metric(list(labels.values()), buckets, self.total)
        return fam


@dataclass(slots=True)
class GatewayStats:
    """Process-wide counters shared by every call session."""

    live_calls: int = 0
    calls_started: int = 0  # media streams bridged to a provider session since start
    frames: FrameCounters = field(default_factory=FrameCounters)
    calls_by_outcome: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    protocol_errors: Counter[str] = field(default_factory=Counter)
    failovers: Counter[str] = field(default_factory=Counter)
    provider_connect: dict[str, Histogram] = field(default_factory=dict)
    webhook_latency: Histogram = field(default_factory=Histogram)
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LOOP_LAG_BUCKETS_S))
    # One per collector generation (0, 1, 2): a pause stops the loop, so the loop-lag scale fits.
    gc_pauses: tuple[Histogram, ...] = field(
        default_factory=lambda: tuple(Histogram(LOOP_LAG_BUCKETS_S) for _ in range(3))
    )

    def observe_connect(self, provider: str, seconds: float) -> None:
        hist = self.provider_connect.get(provider)
        if hist is None:
            hist = self.provider_connect[provider] = Histogram()
        hist.observe(seconds)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        self.gc_pauses[generation].observe(seconds)


class _Collector:
    def __init__(self, stats: GatewayStats, writer_stats: Callable[[], dict[str, float]]) -> None:
        self.stats = stats
        self.writer_stats = writer_stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        s = self.stats
        yield GaugeMetricFamily("voicegw_live_calls", "Calls currently bridged", value=s.live_calls)
        for name, value, doc in (
            ("voicegw_calls_started", s.calls_started, "Media streams bridged to a call session"),
            ("voicegw_frames_in", s.frames.received, "Media frames received from carriers"),
            ("voicegw_frames_out", s.frames.sent, "Media frames sent to carriers"),
            (
                "voicegw_frames_dropped",
                s.frames.dropped,
                "Frames dropped (bounded buffers full or no provider)",
            ),
            ("voicegw_frames_transcoded", s.frames.transcoded, "Frames that needed decoding/resampling"),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        for metric, counter, label, doc in (
            ("voicegw_calls", s.calls_by_outcome, "outcome", "Finished calls by outcome"),
            ("voicegw_refusals", s.refusals, "reason", "Webhook refusals by reason"),
            ("voicegw_protocol_errors", s.protocol_errors, "reason", "Carrier sockets closed for bad input"),
            ("voicegw_failovers", s.failovers, "reason", "Provider failovers by reason"),
        ):
            fam = CounterMetricFamily(metric, doc, labels=[label])
            for key, value in sorted(counter.items()):
                fam.add_metric([key], value)
            yield fam
        for provider, hist in sorted(s.provider_connect.items()):
            yield hist.family(
                "voicegw_provider_connect_seconds", "Provider connect latency", {"provider": provider}
            )
        yield s.webhook_latency.family("voicegw_webhook_seconds", "Webhook handling time")
        yield s.loop_lag.family(
            "voicegw_event_loop_lag_seconds", "How late a 5 ms timer ran: every frame waits at least this"
        )
        for generation, hist in enumerate(s.gc_pauses):
            yield hist.family(
                "voicegw_gc_pause_seconds",
                "Garbage collections by generation: every call's audio stops while one runs",
                {"generation": str(generation)},
            )
        yield GaugeMetricFamily(
            "voicegw_python_allocated_blocks",
            "Python's small-object blocks in use (gateway/gc_freeze.py): growth beyond live calls is a leak",
            value=sys.getallocatedblocks(),
        )
        w = self.writer_stats()
        yield GaugeMetricFamily("voicegw_writer_queue_depth", "Rows waiting in the writer", value=w["depth"])
        yield GaugeMetricFamily(
            "voicegw_writer_flush_seconds_last", "Latency of the last writer flush", value=w["last_flush_s"]
        )
        yield GaugeMetricFamily(
            "voicegw_writer_flush_seconds_max", "Slowest writer flush so far", value=w["max_flush_s"]
        )
        yield CounterMetricFamily("voicegw_writer_rows", "Rows committed by the writer", value=w["rows"])
        yield CounterMetricFamily("voicegw_writer_retries", "Writer flush retries", value=w["retries"])


def render(stats: GatewayStats, writer_stats: Callable[[], dict[str, float]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats, writer_stats))
    return generate_latest(registry)
