"""User-space instructions per media frame of a real ``voicegw serve``, counted by callgrind.

Why instructions: this host's speed moves by a third between minutes (``docs/architecture.md``,
Performance), so CPU-time figures taken on different days cannot compare two versions of the hot
path; callgrind's count for the same code and load repeats within a few per cent whatever the
machine is doing. It sees user space only: the kernel's half (the system calls per frame) is held
by ``tests/e2e/test_hot_path_syscalls.py``.

The gateway runs under valgrind (about 50x slower), so a few calls are already a heavy load for it
and its loop wakes for several frames at a time, as at a few hundred calls without valgrind. The
count starts once the calls are in their steady state and stops before they end; a window of the
same length with no call is counted first and taken off, so the figure is what frames cost, not
the gateway's own timers (at a few calls those would be a quarter of it).

Run: .venv/bin/python tests/bench/bench_instructions.py [--scenario echo relay-mulaw relay-pcm16]
     [--calls 4] [--window 4] (needs valgrind; a scenario takes about 40 s)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loadtest.bench import DEMO_NUMBER, RELAY_MULAW_NUMBER, RELAY_PCM_NUMBER, relay_tenant
from loadtest.bench_procs import free_port

HOST = "127.0.0.1"
NUMBERS = {"echo": DEMO_NUMBER, "relay-mulaw": RELAY_MULAW_NUMBER, "relay-pcm16": RELAY_PCM_NUMBER}
WARM_S = 3.0  # after every call is live: the first frames run start-up paths (imports, caches)
FRAME_ENTRY = "CPyDef_session___CallSession___on_media"  # once per caller frame (mypyc's name)


@dataclass(frozen=True)
class Count:
    scenario: str
    instructions: int  # in the loaded window, less those of the same window with no call
    frames: int  # caller frames the session took in the window (each also went back)
    idle_instructions: int  # the gateway's own timers and housekeeping over the window

    @property
    def per_frame(self) -> float:
        """Instructions per caller frame carried both ways (one in, one back)."""
        return self.instructions / self.frames


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


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
    out = {}
    for line in _get(base + "/metrics").splitlines():
        name, _, value = line.partition(" ")
        if name in ("voicegw_live_calls", "voicegw_frames_in_total", "voicegw_frames_out_total"):
            out[name] = float(value)
    return out


def _dev_env(workdir: Path) -> dict[str, str]:
    """The credentials ``serve --demo`` wrote for the load generator."""
    env = dict(os.environ)
    for line in (workdir / "var" / "dev.env").read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    return env


def _read_callgrind(callgrind_out: Path) -> tuple[int, int]:
    """(instructions, frames) inside the counted window. Frames are the calls callgrind saw to the
    session's per-frame entry point, so both figures cover exactly the same span."""
    text = callgrind_out.read_text()
    match = re.search(r"^totals: (\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {callgrind_out}")
    names: dict[str, str] = {}  # callgrind's name compression: "(id) name" once, "(id)" after
    callee = ""
    frames = 0
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):
            ref, _, name = line.partition("=")[2].partition(" ")
            if name:
                names[ref] = name
            if line[0] == "c":
                callee = names.get(ref, ref)
        elif line.startswith("calls=") and callee == FRAME_ENTRY:
            frames += int(line[6:].split()[0])
    return int(match.group(1)), frames


def _counted_window(pid: int, window_s: float, out: Path, name: str) -> Path:
    """Count ``window_s`` seconds; returns the file callgrind wrote them to."""
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    time.sleep(window_s)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-d", name, str(pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 30
    while (dump := _dump_file(out, name)) is None:  # written when valgrind next polls for commands
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind did not write the {name} dump")
        time.sleep(0.2)
    return dump


def _dump_file(out: Path, name: str) -> Path | None:
    for part in sorted(out.parent.glob(out.name + ".*")):
        with part.open() as f:
            head = f.read(2000)
        if re.search(rf"^desc: Trigger: (?:dump|Client Request:) {name}$", head, re.MULTILINE):
            return part
    return None


def count(scenario: str, calls: int, window_s: float, workdir: Path) -> Count:
    children: list[subprocess.Popen[bytes]] = []
    log = (workdir / f"{scenario}.log").open("wb")
    try:
        db = f"sqlite:///{workdir / (scenario + '.db')}"
        if scenario != "echo":
            sim_port = free_port()
            sim_url = f"http://{HOST}:{sim_port}"
            sim = _cli("simulate", "deepgram", "--relay", "--port", str(sim_port))
            children.append(subprocess.Popen(sim, cwd=workdir, stdout=log, stderr=log))
            _wait_http(sim_url + "/_sim/state", 20)
            tenant = workdir / "tenant.json"
            tenant.write_bytes(orjson.dumps(relay_tenant(sim_url)))
            subprocess.run(_cli("provision", str(tenant), "--db", db), cwd=workdir, check=True, stdout=log)
        port = free_port()
        base = f"http://{HOST}:{port}"
        out = workdir / f"{scenario}.callgrind"
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        gateway = subprocess.Popen(
            [*valgrind, *_cli("serve", "--db", db, "--port", str(port), "--demo")],
            cwd=workdir,
            stdout=log,
            stderr=log,
        )
        children.append(gateway)
        _wait_http(base + "/health", 180)
        time.sleep(WARM_S)
        idle_dump = _counted_window(gateway.pid, window_s, out, "idle")  # the gateway's own timers
        generator = subprocess.Popen(
            _cli(
                "loadtest",
                *("--url", base, "--calls", str(calls), "--ramp", "1", "--to", NUMBERS[scenario]),
                *("--duration", str(round(window_s + WARM_S + 8))),
            ),
            cwd=workdir,
            env=_dev_env(workdir),
            stdout=log,
            stderr=log,
        )
        children.append(generator)
        deadline = time.monotonic() + 60
        while _metrics(base).get("voicegw_live_calls", 0) < calls:
            if time.monotonic() > deadline or generator.poll() is not None:
                raise RuntimeError(f"{scenario}: the calls did not all start (see {log.name})")
            time.sleep(0.5)
        time.sleep(WARM_S)
        before = _metrics(base)
        load_dump = _counted_window(gateway.pid, window_s, out, "load")
        after = _metrics(base)
        if after.get("voicegw_live_calls", 0) < calls:
            raise RuntimeError(f"{scenario}: calls ended inside the counted window")
        frames_in = after["voicegw_frames_in_total"] - before["voicegw_frames_in_total"]
        frames_out = after["voicegw_frames_out_total"] - before["voicegw_frames_out_total"]
        if frames_out < 0.98 * frames_in:
            raise RuntimeError(f"{scenario}: {frames_out:.0f} of {frames_in:.0f} frames came back")
        generator.wait(timeout=120)
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=120)
        idle, _ = _read_callgrind(idle_dump)
        loaded, frames = _read_callgrind(load_dump)
        if not frames:
            raise RuntimeError(f"{FRAME_ENTRY} was never called: is the session module compiled?")
        return Count(scenario, loaded - idle, frames, idle)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
                child.wait(timeout=30)
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", nargs="+", choices=sorted(NUMBERS), default=["echo", "relay-mulaw"])
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--window", type=float, default=4.0, help="seconds counted")
    p.add_argument("--keep", action="store_true", help="keep the work directory (callgrind files)")
    a = p.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="voicegw-instr-"))
    try:
        for scenario in a.scenario:
            c = count(scenario, a.calls, a.window, workdir)
            print(
                f"{c.scenario:12} {c.per_frame:8.0f} instructions per frame "
                f"({c.instructions:,} for {c.frames} frames; {a.calls} calls, {a.window:g} s; "
                f"{c.idle_instructions:,} more were the same window with no call)",
                flush=True,
            )
    finally:
        if a.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
