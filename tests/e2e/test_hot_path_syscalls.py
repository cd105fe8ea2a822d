"""A live call costs the gateway one read per caller frame and one write per frame it sends back.

On loopback about half of the gateway's CPU per call is kernel time (docs/architecture.md,
"Performance, as measured"), so an extra system call per frame (a log line to a file, a timer
syscall, a second write per message) costs more than most user-space work would. Timing cannot
show that reliably on a shared host; counting can. A real ``voicegw serve`` carries echo calls
from the fake carriers while ``strace -c`` counts its system calls for a window of steady
streaming, and the counts are held against the frames that crossed the gateway in that window.

strace slows the traced process a lot, which only makes the gateway read several frames at once:
these are upper bounds. Skipped, with the reason, where strace is missing or may not attach.
"""

from __future__ import annotations

import asyncio
import shutil
import signal

import aiohttp
import pytest

from loadtest.carriers.call import place_call
from loadtest.carriers.plan import CallPlan, CallResult
from loadtest.frame_cost import POLLS, parse_strace_summary
from loadtest.pacer import Pacer
from tests.e2e.serve_process import ServeProcess

CALLS = 20  # 1,000 frames a second each way: one extra syscall per frame would be 2.5x the budget below
CALL_S = 6.0
WINDOW_S = 2.0
# Frames the counters and strace's window may disagree on (calls start and stop streaming around it).
SLACK = 0.1
# System calls made at a fixed rate whatever the load: thread wake-ups (futex), the SQLite writer's
# file calls, and on Python 3.11 a getpid() per asyncio.get_running_loop() (~290 a second measured
# while the loop-lag probe still slept on a task, 200 of them getpid; it now ticks on call_at).
BACKGROUND_PER_S = 400


async def _count_syscalls(pid: int, seconds: float) -> str:
    """Attaches strace to every thread of ``pid`` for ``seconds``; returns its summary table."""
    proc = await asyncio.create_subprocess_exec(
        "strace", "-c", "-f", "-qq", "-p", str(pid), stderr=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(seconds)
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)  # detaches and prints the summary
    _, err = await proc.communicate()
    text = err.decode()
    if proc.returncode != 0 and "total" not in text:
        pytest.skip(f"strace could not attach to the gateway: {text.strip()[:200]}")
    return text


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed on this machine")
async def test_one_read_and_one_write_per_frame(served: ServeProcess) -> None:
    results: list[CallResult] = []
    pacer = Pacer()

    def frames() -> tuple[int, int]:
        return sum(r.frames_sent for r in results), sum(r.frames_received for r in results)

    async with aiohttp.ClientSession() as http:
        calls = asyncio.gather(
            *(
                place_call(
                    http,
                    served.url,
                    CallPlan(to="+15550001111", duration_s=CALL_S),
                    credentials=served.credentials,
                    pacer=pacer,
                    on_placed=results.append,
                )
                for _ in range(CALLS)
            )
        )
        await asyncio.sleep(1.5)  # every call is streaming
        sent_before, back_before = frames()
        summary = await _count_syscalls(served.proc.pid, WINDOW_S)
        sent, back = (now - before for now, before in zip(frames(), (sent_before, back_before), strict=True))
        done = await calls
    await pacer.aclose()
    counts = parse_strace_summary(summary)

    assert all(not r.errors and r.return_ratio > 0.99 for r in done), [r.errors for r in done]
    assert sent > CALLS * 50 and back > CALLS * 50, (sent, back)
    reads, writes = counts.get("read", 0), counts.get("write", 0)
    polls = sum(counts.get(name, 0) for name in POLLS)
    others = {name: n for name, n in counts.items() if name not in ("read", "write", *POLLS)}
    report = f"{sent} frames in, {back} out; strace counted {counts}"
    assert reads <= sent * (1 + SLACK), report
    assert writes <= back * (1 + SLACK), report
    # One wake-up serves every socket that became readable; never more than one per frame.
    assert polls <= sent * (1 + SLACK), report
    assert sum(others.values()) <= BACKGROUND_PER_S * WINDOW_S, report
