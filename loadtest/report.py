"""Rendering a load report: the terminal table, ``report.json`` and ``report.html`` with PNG plots."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import orjson

from loadtest.runner import LoadReport

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
        import matplotlib
    except ImportError as exc:  # matplotlib is an optional dependency (test extras)
        raise RuntimeError("plots need matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = report.timeline
    points = report.latency_points
    specs: list[tuple[str, str, Sequence[float], Sequence[float], str]] = [
        ("latency_over_time.png", "added latency (ms)", [p[0] for p in points], [p[1] for p in points], "."),
        ("live_calls.png", "live calls", tl.t, tl.live_calls, "-"),
        ("cpu.png", "CPU (% of a core)", tl.t, tl.gateway_cpu or tl.generator_cpu, "-"),
    ]
    for name, ylabel, xs, ys, style in specs:
        fig, ax = plt.subplots(figsize=(6, 2.6), dpi=80)
        ax.plot(xs, ys, style, markersize=2)
        if name == "cpu.png" and tl.gateway_cpu:
            ax.plot(tl.t, tl.generator_cpu, "--", label="generator")
            ax.legend(["gateway", "generator"], fontsize=8)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=80)
    ax.hist([p[1] for p in points], bins=50)
    ax.set_xlabel("added latency (ms)")
    ax.set_ylabel("bursts")
    fig.tight_layout()
    fig.savefig(out / "latency_histogram.png")
    plt.close(fig)


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
