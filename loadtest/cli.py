"""``voicegw loadtest``: many simulated carrier calls against a running gateway, with a report."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from gateway import event_loop
from loadtest.carriers.plan import Credentials
from loadtest.report import format_table, write_report
from loadtest.runner import LoadConfig, Progress, run_load

_NON_TTY_PROGRESS_EVERY_S = 5.0


class _ProgressPrinter:
    """One ``\\r``-updated line on a terminal; a plain line every few seconds otherwise (logs, CI)."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._tty = sys.stderr.isatty()
        self._last_line = 0.0

    def __call__(self, p: Progress) -> None:
        line = (
            f"[{p.elapsed_s:6.1f}s] calls {p.placed}/{self._total} live {p.live} ended {p.ended} "
            f"frames {p.frames_sent} sent {p.frames_returned} back  p99 {p.p99_ms:.1f} ms"
        )
        if self._tty:
            sys.stderr.write("\r" + line + "\033[K")
            sys.stderr.flush()
        elif time.monotonic() - self._last_line >= _NON_TTY_PROGRESS_EVERY_S:
            self._last_line = time.monotonic()
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._tty:
            sys.stderr.write("\n")


def _demo_number(carrier: str) -> str:
    """The number `voicegw serve --demo` (`make serve`) answers for ``carrier``, read from the demo
    tenant itself: the default dialled number, so a first load test against the demo needs no --to."""
    from storage.provision import demo_document

    numbers = (n for w in demo_document()["workspaces"] for n in w.get("phone_numbers", ()))
    return next(n["number"] for n in numbers if n["provider"] == carrier)


def _cmd(args: argparse.Namespace) -> int:
    config = LoadConfig(
        url=args.url,
        calls=args.calls,
        ramp_s=args.ramp,
        duration_s=args.duration,
        carrier=args.carrier,
        to=args.to or _demo_number(args.carrier),
        from_=args.from_,
        credentials=Credentials.from_env(args.twilio_auth_token, args.telnyx_private_key),
        gateway_pids=tuple(args.gateway_pid or ()),
        telnyx_api_port=args.telnyx_api_port,
        telnyx_encoding=args.telnyx_encoding,
        tick_s=args.tick_ms / 1000,
    )
    if config.carrier == "twilio" and not config.credentials.twilio_auth_token:
        print("error: --twilio-auth-token or VOICEGW_TWILIO_AUTH_TOKEN is required", file=sys.stderr)
        return 2
    if config.carrier == "telnyx" and not config.credentials.telnyx_private_key:
        print("error: --telnyx-private-key or VOICEGW_TELNYX_PRIVATE_KEY is required", file=sys.stderr)
        return 2
    for pid in config.gateway_pids:
        if not os.path.exists(f"/proc/{pid}/stat"):
            print(f"error: --gateway-pid {pid}: no such process", file=sys.stderr)
            return 2
    printer = _ProgressPrinter(config.calls)
    try:
        report = event_loop.run(run_load(config, progress=printer))
    except KeyboardInterrupt:
        printer.done()
        print("interrupted", file=sys.stderr)
        return 130
    printer.done()
    print(format_table(report))
    if args.report:
        print(f"report: {write_report(report, args.report)}")
    return 1 if report.failed else 0


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps wants comma-separated integers, got {text!r}") from None
    if not steps or any(n <= 0 for n in steps) or list(steps) != sorted(steps):
        raise argparse.ArgumentTypeError("--steps must be positive and increasing")
    return steps


def _fraction(text: str) -> float:
    from loadtest.cpu_budget import quota_for

    try:
        value = float(text)
        quota_for(value)  # refuses what is not a fraction of one core
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--cpu-budget: {exc}") from None
    return value


def _cmd_bench(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    import orjson

    from loadtest.bench import BenchOptions, run_bench
    from loadtest.bench_report import write_results
    from loadtest.cpu_budget import CpuBudgetUnavailable

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = {
        k: v
        for k, v in {
            "steps": args.steps,
            "duration_s": args.duration,
            "settle_s": args.settle,
            "runs": args.runs,
            "out": Path(args.out),
            "name": args.name,
            "only": tuple(args.only.split(",")) if args.only else (),
            "profile": False if args.no_profile else None,
            "simulator_in_process": False if args.simulator_process else None,
            "frame_cost": False if args.no_frame_cost else None,
            "cpu_budget": args.cpu_budget,
        }.items()
        if v is not None
    }
    if args.rejudge:
        from loadtest.bench import rejudge

        source = Path(args.rejudge)
        doc = rejudge(orjson.loads(source.read_bytes())) | {"name": source.stem}  # rewrites that file
        print(f"results: {write_results(doc, source.parent)}")
        return 0
    options = BenchOptions.quick_mode(**given) if args.quick else BenchOptions(**given)

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the bench like Ctrl-C: children are stopped first

    signal.signal(signal.SIGTERM, _terminate)
    try:
        doc = event_loop.run(
            run_bench(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
        )
    except KeyboardInterrupt:
        print("interrupted: every process the bench started has been stopped", file=sys.stderr)
        return 130
    except CpuBudgetUnavailable as exc:
        print(f"--cpu-budget: {exc}", file=sys.stderr)
        return 2
    md = write_results(doc, options.out)
    for t in doc["targets"]:
        print(f"{t['verdict']:>17}  {t['target']}: {t['evidence']}")
    print(f"results: {md}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="run the standard benchmark matrix on this machine")
    b.add_argument("--quick", action="store_true", help="tiny steps, one run: a ~1 minute smoke test")
    b.add_argument(
        "--steps",
        type=_steps,
        help="concurrency steps, e.g. 50,100,200 (default: 25…1600, every target's call count among them)",
    )
    b.add_argument("--duration", type=float, help="seconds each step is held at full load (default 10)")
    b.add_argument(
        "--settle",
        type=float,
        help="seconds after the ramp before a step is judged (default 1; under --cpu-budget the ramp's "
        "backlog drains only with a worker's spare quota: 3 is enough at 0.3-0.4)",
    )
    b.add_argument("--runs", type=int, help="runs per scenario; figures are medians (default 3)")
    b.add_argument("--out", default="bench/results", help="results directory (default bench/results)")
    b.add_argument("--name", help="results file name, without extension (default: the date)")
    b.add_argument(
        "--only",
        help="comma-separated parts: baseline,a,b,c,d, webhook, cost (instructions and system calls per "
        "frame, counted under callgrind and strace) (default: all)",
    )
    b.add_argument(
        "--no-frame-cost", action="store_true", help="skip the per-frame instruction and syscall counts"
    )
    b.add_argument("--no-profile", action="store_true", help="skip the py-spy hot-spot pass on (a) and (b)")
    b.add_argument(
        "--simulator-process",
        action="store_true",
        help="(b), (c): the provider simulator in a process of its own on the generator's core "
        "(default: in the generator's event loop)",
    )
    b.add_argument(
        "--cpu-budget",
        type=_fraction,
        metavar="FRACTION",
        help="cap every server at FRACTION of a core per worker (a cgroup CPU quota; needs root): "
        "on a 2-core machine (d)'s workers then leave the load generator room, and (d) over (a) is "
        "measured at equal budgets; whole-core targets are not judged",
    )
    b.add_argument(
        "--rejudge", metavar="JSON", help="re-apply the current rules to a results file (no new measurement)"
    )
    b.set_defaults(func=_cmd_bench)

    p = sub.add_parser("loadtest", help="place many simulated carrier calls against a gateway")
    p.add_argument("--url", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--calls", type=int, default=10, help="number of calls")
    p.add_argument("--ramp", type=float, default=0.0, help="seconds over which calls start")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of audio per call")
    p.add_argument("--carrier", choices=("twilio", "telnyx"), default="twilio")
    p.add_argument(
        "--to",
        metavar="NUMBER",
        help="dialled number (default: the --demo tenant's echo number for --carrier)",
    )
    p.add_argument("--from", dest="from_", default="+15550199999", metavar="NUMBER", help="caller number")
    p.add_argument("--report", metavar="DIR", help="write report.json, report.html and plots here")
    p.add_argument("--gateway-pid", type=int, action="append", help="gateway process id (repeatable)")
    p.add_argument("--twilio-auth-token", help="default: $VOICEGW_TWILIO_AUTH_TOKEN")
    p.add_argument("--telnyx-private-key", help="base64 Ed25519 seed; default: $VOICEGW_TELNYX_PRIVATE_KEY")
    p.add_argument("--telnyx-api-port", type=int, default=0, help="port of the fake Telnyx REST API")
    p.add_argument("--telnyx-encoding", choices=("PCMU", "PCMA", "L16"), default="PCMU")
    p.add_argument("--tick-ms", type=float, default=2.0, help="pacer grid (ms); calls share wake-ups")
    p.set_defaults(func=_cmd)
