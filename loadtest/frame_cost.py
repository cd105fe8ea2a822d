"""What one media frame costs the gateway, counted rather than timed: user-space instructions
(callgrind) and system calls (strace), on a real ``voicegw serve`` carrying a few calls.

Why counts: this host's speed moves by a third between minutes (``docs/architecture.md``,
Performance), so the bench's CPU figures from two days cannot say whether the hot path got cheaper;
these counts repeat within a few per cent whatever the machine is doing. Instructions cover user
space, system calls the kernel's share (about half the gateway's CPU on loopback).

Instructions: the gateway runs under valgrind (~50x slower), so 4 calls are already a heavy load
for it and its loop wakes for several frames at a time, as at a few hundred calls natively. A window
with no call is counted first and taken off the one in the calls' steady state, so the figure is what
frames cost, not the gateway's own timers; frames are the calls callgrind saw to the session's
per-frame entry point, so both numbers cover the same span. System calls: ``strace -c`` on every
thread for a window of 20 calls, against the frames the gateway's counters saw (strace slows the
process, which only batches reads: upper bounds).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from loadtest.bench_procs import HOST, free_port, voicegw_argv

INSTRUCTION_CALLS = 4
SYSCALL_CALLS = 20
WINDOW_S = 4.0
WARM_S = 3.0  # after every call is live: the first frames run start-up paths (imports, caches)
FRAME_ENTRY = "CPyDef_session___CallSession___on_media"  # once per caller frame (mypyc's name)
POLLS = ("epoll_pwait", "epoll_wait")


@dataclass(frozen=True)
class CostCase:
    """One kind of call: the number dialled, and for a relayed one the tenant that routes it to the
    Deepgram relay simulator (given the simulator's URL)."""

    key: str
    number: str
    relay_tenant: Callable[[str], dict[str, Any]] | None = None


# -- parsing the tools' output (pure) -----------------------------------------------------------------


def parse_callgrind(text: str, entry: str = FRAME_ENTRY) -> tuple[int, int]:
    """``(instructions, calls to entry)`` of one callgrind dump."""
    match = re.search(r"^totals: (\d+)", text, re.MULTILINE)
    if match is None:
        raise ValueError("no instruction total in the callgrind output")
    names: dict[str, str] = {}  # callgrind's name compression: "(id) name" once, "(id)" after
    callee = ""
    calls = 0
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):
            ref, _, name = line.partition("=")[2].partition(" ")
            if name:
                names[ref] = name
            if line[0] == "c":
                callee = names.get(ref, ref)
        elif line.startswith("calls=") and callee == entry:
            calls += int(line[6:].split()[0])
    return int(match.group(1)), calls


def parse_strace_summary(text: str) -> dict[str, int]:
    """``{syscall: calls}`` from ``strace -c`` output (columns: %, seconds, usecs, calls, [errors,] name)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0][0].isdigit() or fields[-1] == "total":
            continue
        counts[fields[-1]] = int(fields[3])
    return counts


def syscalls_per_frame(
    counts: Mapping[str, int], frames_in: float, frames_out: float, window_s: float
) -> dict[str, float]:
    """Reads per caller frame, writes per frame sent back, event-loop waits per caller frame, and
    every other call per second (the part that does not grow with frames)."""
    polls = sum(counts.get(name, 0) for name in POLLS)
    other = sum(n for name, n in counts.items() if name not in ("read", "write", *POLLS))
    return {
        "reads_per_frame": round(counts.get("read", 0) / max(frames_in, 1.0), 3),
        "writes_per_frame": round(counts.get("write", 0) / max(frames_out, 1.0), 3),
        "waits_per_frame": round(polls / max(frames_in, 1.0), 3),
        "other_per_s": round(other / window_s, 1),
    }


# -- one gateway carrying a few calls -----------------------------------------------------------------


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _get(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _metrics(base: str) -> dict[str, float]:
    """The gateway's live calls and frame counters, from its ``/metrics``."""
    wanted = ("voicegw_live_calls", "voicegw_frames_in_total", "voicegw_frames_out_total")
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(_get(base + "/metrics"))
        for sample in family.samples
        if sample.name in wanted
    }


@dataclass
class _Rig:
    base: str
    gateway: subprocess.Popen[bytes]
    calls: int
    log_name: str

    def frames(self) -> tuple[float, float]:
        m = _metrics(self.base)
        if m.get("voicegw_live_calls", 0) < self.calls:
            raise RuntimeError(f"calls ended before the window did (see {self.log_name})")
        return m["voicegw_frames_in_total"], m["voicegw_frames_out_total"]


@contextlib.contextmanager
def _gateway_with_calls(
    case: CostCase,
    calls: int,
    window_s: float,
    workdir: Path,
    env: Mapping[str, str],
    core: int | None,
    wrap: list[str],
    before_calls: Callable[[subprocess.Popen[bytes]], None] = lambda _: None,
) -> Iterator[_Rig]:
    """``voicegw serve`` (under ``wrap``, pinned to ``core``) with ``calls`` calls of ``case``
    streaming, from ``WARM_S`` into their steady state; everything is stopped on the way out."""
    tag = f"cost-{case.key}-{'wrapped' if wrap else 'plain'}"
    children: list[subprocess.Popen[bytes]] = []
    # taskset, not a preexec_fn: this runs in a worker thread of the bench, and Python code between
    # fork and exec may deadlock when other threads exist.
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with (workdir / f"{tag}.log").open("wb") as log:
        try:
            db = f"sqlite:///{workdir / (tag + '.db')}"
            if case.relay_tenant is not None:
                sim_port = free_port()
                sim_url = f"http://{HOST}:{sim_port}"
                sim = voicegw_argv("simulate", "deepgram", "--relay", "--port", str(sim_port))
                children.append(subprocess.Popen(sim, cwd=workdir, env=env, stdout=log, stderr=log))
                _wait_http(sim_url + "/_sim/state", 20)
                tenant = workdir / f"{tag}-tenant.json"
                tenant.write_bytes(orjson.dumps(case.relay_tenant(sim_url)))
                provision = voicegw_argv("provision", str(tenant), "--db", db)
                subprocess.run(provision, cwd=workdir, env=env, check=True, stdout=log, stderr=log)
            port = free_port()
            base = f"http://{HOST}:{port}"
            serve = [*pin, *wrap, *voicegw_argv("serve", "--db", db, "--port", str(port), "--demo")]
            gateway = subprocess.Popen(serve, cwd=workdir, env=env, stdout=log, stderr=log)
            children.append(gateway)
            _wait_http(base + "/health", 180)
            time.sleep(WARM_S)
            before_calls(gateway)
            loadtest = voicegw_argv(
                "loadtest",
                *("--url", base, "--calls", str(calls), "--ramp", "1", "--to", case.number),
                *("--duration", str(round(window_s + 2 * WARM_S + 10))),
            )
            generator = subprocess.Popen(loadtest, cwd=workdir, env=env, stdout=log, stderr=log)
            children.append(generator)
            deadline = time.monotonic() + 60
            while _metrics(base).get("voicegw_live_calls", 0) < calls:
                if time.monotonic() > deadline or generator.poll() is not None:
                    raise RuntimeError(f"{case.key}: the calls did not all start (see {log.name})")
                time.sleep(0.5)
            time.sleep(WARM_S)
            yield _Rig(base, gateway, calls, log.name)
            generator.wait(timeout=120)
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=120)
        finally:
            for child in reversed(children):
                if child.poll() is None:
                    child.terminate()
                    child.wait(timeout=30)


# -- the two counts -----------------------------------------------------------------------------------


def _callgrind_window(pid: int, window_s: float, out: Path, name: str) -> Path:
    """Count ``window_s`` seconds of ``pid``; returns the file callgrind wrote them to."""
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    time.sleep(window_s)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", name, str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while True:  # written when valgrind next polls for commands
        for part in sorted(out.parent.glob(out.name + ".*")):
            with part.open() as f:
                head = f.read(2000)
            if re.search(rf"^desc: Trigger: (?:dump|Client Request:) {name}$", head, re.MULTILINE):
                return part
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind did not write the {name} dump")
        time.sleep(0.2)


def count_instructions(
    case: CostCase, workdir: Path, env: Mapping[str, str], core: int | None = None, window_s: float = WINDOW_S
) -> dict[str, Any]:
    out = workdir / f"cost-{case.key}.callgrind"
    wrap = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    idle: list[Path] = []

    def count_idle(gateway: subprocess.Popen[bytes]) -> None:
        idle.append(_callgrind_window(gateway.pid, window_s, out, "idle"))

    with _gateway_with_calls(case, INSTRUCTION_CALLS, window_s, workdir, env, core, wrap, count_idle) as rig:
        loaded = _callgrind_window(rig.gateway.pid, window_s, out, "load")
        rig.frames()  # the calls outlived the window
    idle_instructions, _ = parse_callgrind(idle[0].read_text())
    instructions, frames = parse_callgrind(loaded.read_text())
    if not frames:
        raise RuntimeError(f"{FRAME_ENTRY} was never called: are the per-frame modules compiled?")
    return {
        "calls": INSTRUCTION_CALLS,
        "window_s": window_s,
        "frames": frames,
        "instructions_per_frame": round((instructions - idle_instructions) / frames),
        "idle_instructions_per_s": round(idle_instructions / window_s),
    }


def count_syscalls(
    case: CostCase, workdir: Path, env: Mapping[str, str], core: int | None = None, window_s: float = WINDOW_S
) -> dict[str, Any]:
    with _gateway_with_calls(case, SYSCALL_CALLS, window_s, workdir, env, core, []) as rig:
        in_before, out_before = rig.frames()
        strace = subprocess.Popen(
            ["strace", "-c", "-f", "-qq", "-p", str(rig.gateway.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(window_s)
        strace.send_signal(signal.SIGINT)  # detaches and prints the summary
        _, err = strace.communicate(timeout=30)
        in_after, out_after = rig.frames()
    text = err.decode()
    if "total" not in text:
        raise RuntimeError(f"strace could not attach: {text.strip()[:200]}")
    counts = parse_strace_summary(text)
    frames_in, frames_out = in_after - in_before, out_after - out_before
    return {
        "calls": SYSCALL_CALLS,
        "window_s": window_s,
        "frames_in": round(frames_in),
        "frames_out": round(frames_out),
        **syscalls_per_frame(counts, frames_in, frames_out, window_s),
        "counts": counts,
    }


def measure(
    cases: tuple[CostCase, ...],
    workdir: Path,
    env: Mapping[str, str],
    core: int | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both counts for each case; a count whose tool is missing or fails is recorded as skipped."""
    tools = {"instructions": ("valgrind", count_instructions), "syscalls": ("strace", count_syscalls)}
    results: dict[str, Any] = {}
    for case in cases:
        entry: dict[str, Any] = {}
        for what, (tool, count) in tools.items():
            if shutil.which(tool) is None:
                entry[what] = {"skipped": f"{tool} is not installed"}
                continue
            progress(f"frame cost: {case.key}: {what}")
            try:
                entry[what] = count(case, workdir, env, core)
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as exc:
                entry[what] = {"skipped": f"{type(exc).__name__}: {exc}"}
            progress(f"  {entry[what]}")
        results[case.key] = entry
    return results
