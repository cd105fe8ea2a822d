"""The processes ``voicegw bench`` spawns: pinned to CPU cores, logged to files, always stopped.

Every child gets its own session (process group), so stopping it also stops what it forked (gateway
workers) and a Ctrl-C in the terminal reaches only the bench, which then stops its children in order.
``atexit`` is the last resort when the bench itself dies of an exception.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from loadtest.cpu_budget import ServerBudget

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0
HOST = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on right now (the child binds it a moment later; localhost only)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def voicegw_argv(*args: str) -> list[str]:
    """``voicegw ARGS`` with this interpreter (the bench's children run the checkout it runs)."""
    return [sys.executable, "-m", "gateway.cli", *args]


def uvloop_argv(module_call: str) -> list[str]:
    """``python -c`` that runs ``module_call`` under uvloop: the baseline (plain aiohttp under
    ``asyncio.run``) defaults to the stock loop, every voicegw command to uvloop
    (``gateway.event_loop``); comparing them fairly needs the same loop everywhere."""
    code = (
        "import asyncio, sys, uvloop\n"
        "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
        f"{module_call}\n"
    )
    return [sys.executable, "-c", code]


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    cores: frozenset[int]
    budget: ServerBudget | None = None  # its CPU quota's cgroups, removed when it stops

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Spawns pinned children and stops them (SIGTERM to the group, then SIGKILL) in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []
        atexit.register(self.stop_all)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        cores: Iterable[int],
        env: Mapping[str, str],
        cwd: Path,
        budget: ServerBudget | None = None,
    ) -> Child:
        pinned = frozenset(cores)
        if budget is not None:
            argv = budget.wrap(argv)
        log_path = self._log_dir / f"{name}.log"
        with open(log_path, "ab") as out, _removed_on_error(budget):
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
                # Before exec, so every thread and forked worker inherits the pinning.
                preexec_fn=lambda: os.sched_setaffinity(0, pinned),
            )
        child = Child(name, popen, log_path, pinned, budget)
        self._children.append(child)
        log.info(
            "started %s (pid %d) on core(s) %s%s",
            name,
            popen.pid,
            sorted(pinned),
            f", capped at {budget.cores:.2f} core(s)" if budget is not None else "",
        )
        return child

    def stop(self, child: Child) -> None:
        if child in self._children:
            self._children.remove(child)
        _stop(child)

    def stop_all(self) -> None:
        while self._children:
            _stop(self._children.pop())

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        atexit.unregister(self.stop_all)


@contextlib.contextmanager
def _removed_on_error(budget: ServerBudget | None) -> Iterator[None]:
    """A budget whose process never started would be left behind: nothing else removes it."""
    try:
        yield
    except BaseException:
        if budget is not None:
            budget.remove()
        raise


def _stop(child: Child) -> None:
    try:
        _stop_processes(child)
    finally:
        if child.budget is not None:
            child.budget.remove()


def _stop_processes(child: Child) -> None:
    if child.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s: killing it", child.name, child.pid, STOP_GRACE_S
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.popen.wait()
    # Workers left behind by a parent that died first share its process group (also when the parent
    # had already gone before the stop).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


async def wait_http(child: Child, url: str, timeout_s: float = 20.0) -> None:
    """Until ``url`` answers anything over HTTP; RuntimeError (with the child's log) on death or timeout."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if child.popen.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.popen.returncode}:\n{child.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                    await resp.read()
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout_s:.0f} s:\n{child.log_tail()}")


def run_checked(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    """A short helper command (e.g. ``voicegw provision``); RuntimeError with its output on failure."""
    done = subprocess.run(list(argv), env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout
