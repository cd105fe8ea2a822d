"""Rendering a load report: the terminal table, ``report.json`` and ``report.html`` with PNG plots."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from loadtest.runner import LoadReport
from loadtest.timehist import GROWTH

PLOTS = ("latency_over_time.png", "live_calls.png", "cpu.png", "latency_histogram.png")


def format_table(report: LoadReport) -> str:
    """The end-of-run summary, one figure per line."""
    lat, play, late = report.latency, report.playout_latency, report.lateness
    rows = [
        ("calls placed / refused / failed", f"{report.placed} / {report.refused} / {report.failed}"),
        ("frames sent / returned", f"{report.frames_sent} / {report.frames_returned:.0f}"),
        ("return ratio", f"{report.return_ratio * 100:.3f} %"),
        (
            "added latency p50/p95/p99/max",
            f"{lat.p50:.1f} / {lat.p95:.1f} / {lat.p99:.1f} / {lat.max:.1f} ms  (n={lat.count})",
        ),
        ("play-out latency p50/p99", f"{play.p50:.1f} / {play.p99:.1f} ms"),
        ("jitter (RFC 3550) mean/max", f"{report.jitter_mean_ms:.2f} / {report.jitter_max_ms:.2f} ms"),
        ("generator lateness p99/max", f"{late.p99:.2f} / {late.max:.2f} ms"),
    ]
    if report.config.gateway_pids:
        cpu = report.gateway_cpu()
        rss = max(report.timeline.gateway_rss_mb, default=0.0)
        rows.append(("gateway CPU mean/max", f"{cpu.mean:.0f} / {cpu.max:.0f} % of a core"))
        rows.append(("gateway RSS max", f"{rss:.0f} MB"))
    gen = report.timeline.generator_cpu
    if gen:
        rows.append(("generator CPU mean", f"{sum(gen) / len(gen):.0f} % of a core"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    for error, count in report.top_errors(5):
        lines.append(f"  error x{count}: {error}")
    return "\n".join(lines)


def write_report(report: LoadReport, directory: str | Path) -> Path:
    """Writes report.json, the PNG plots and report.html into ``directory``; returns the HTML path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_json()
    (out / "report.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    _plots(report, out)
    page = out / "report.html"
    page.write_text(_html(report), encoding="utf-8")
    return page


def _plots(report: LoadReport, out: Path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # matplotlib is an optional dependency (test extras)
        raise RuntimeError("plots need matplotlib: pip install matplotlib") from exc

    def plot(name: str, xlabel: str, ylabel: str, draw: Callable[[Any], None]) -> None:
        # A bare Figure (no pyplot): no global figure registry to close, no GUI back-end chosen.
        fig = Figure(figsize=(6, 2.6), dpi=80)
        ax = fig.subplots()
        draw(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name)

    tl = report.timeline
    over_time = report.histograms.latency.series()
    slot_s = report.histograms.latency.slot_s  # 1 s, longer once a long run merged its slots

    def latency(ax: Any) -> None:
        for key, style in (("p50", "-"), ("p99", "-"), ("max", ":")):
            ax.plot(over_time["t"], over_time[key], style, label=f"{key} per {slot_s:g} s")

    def cpu(ax: Any) -> None:
        if tl.gateway_cpu:
            ax.plot(tl.t, tl.gateway_cpu, "-", label="gateway")
        ax.plot(tl.t, tl.generator_cpu, "--", label="generator")

    def histogram(ax: Any) -> None:
        # Log buckets (loadtest.timehist), drawn at their midpoints on a log axis, as wide as they are.
        buckets = report.histograms.latency.buckets()
        if buckets:
            values, counts = zip(*buckets, strict=True)
            ax.bar(values, counts, width=[v * (GROWTH - 1) for v in values])
            ax.set_xscale("log")

    plot("latency_over_time.png", "time (s)", "added latency (ms)", latency)
    plot("live_calls.png", "time (s)", "live calls", lambda ax: ax.plot(tl.t, tl.live_calls, "-"))
    plot("cpu.png", "time (s)", "CPU (% of a core)", cpu)
    plot("latency_histogram.png", "added latency (ms)", "bursts", histogram)


def _html(report: LoadReport) -> str:
    cfg = report.config
    title = f"voicegw load test: {cfg.calls} {cfg.carrier} calls against {cfg.url}"
    images = "\n".join(f'<p><img src="{name}" alt="{name}"></p>' for name in PLOTS)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>"
        f"<pre>{html.escape(format_table(report))}</pre>{images}"
        '<p>Raw figures: <a href="report.json">report.json</a></p></body></html>\n'
    )
