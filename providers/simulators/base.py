"""Shared pieces of the provider simulators: an aiohttp server shell, fault injection, a tiny VAD.

Each simulator (one module per provider) subclasses ``SimulatorServer`` and implements
``routes()``; the protocol logic lives in the subclass, exactly as the real provider speaks it.
Tests flip ``faults`` at run time (also over HTTP: ``POST /_sim/faults`` with JSON) to make the
simulator refuse, stall, drop, error or expire sessions. ``GET /_sim/lag`` tells how late the
simulator's own event loop has run (cumulative histogram buckets, like the gateway's
``voicegw_event_loop_lag_seconds``), once ``watch_loop_lag()`` started the probe (the bench's
relaying simulators, on the load generator's core).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.log import access_logger

from gateway.loop_lag import watch_loop_lag
from gateway.metrics import LOOP_LAG_BUCKETS_S, Histogram
from providers.base import AudioFormat


@dataclass(slots=True)
class Faults:
    """Fault injection switches shared by every simulator."""

    refuse_handshake: bool = False  # reject the WebSocket upgrade (HTTP 503) / REST call
    refuse_status: int = 503  # status used when refusing (401 emulates a bad key, 429 quota)
    handshake_delay_s: float = 0.0  # answer the upgrade / first message this late
    close_after_s: float | None = None  # close abruptly this long into the session
    close_code: int | None = None  # provider-specific close code for close_after_s (None: provider default)
    error_after_s: float | None = None  # send the provider's error event this long in
    mute: bool = False  # keep the socket open but stop sending audio
    expire_after_s: float | None = None  # session-expiry semantics (provider specific)
    reply_delay_ms: int = 0  # extra delay before the agent's reply audio

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in values.items():
            if key not in names:
                raise KeyError(f"unknown fault {key!r}")
            setattr(self, key, value)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)


class SimulatorServer(ABC):
    """An aiohttp server on 127.0.0.1 for one simulated provider."""

    name = "simulator"

    def __init__(self) -> None:
        self.faults = Faults()
        self.sessions_started = 0
        self.sessions_active = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0
        self.loop_lag: Histogram | None = None

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The provider's endpoints (REST and WebSocket), as the real service exposes them."""

    # -- shell ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.routes())
        app.add_routes(
            [
                web.post("/_sim/faults", self._set_faults),
                web.get("/_sim/state", self._state),
                web.get("/_sim/lag", self._lag),
            ]
        )
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, access_log: bool = True) -> int:
        """Listens on ``host:port`` (0: any free port) and returns the port. Without ``access_log``
        no line per request: the bench serves hundreds of sessions a step from its own process."""
        # A stopped simulator is a dead provider: live sessions are cut after 0.2 s, not drained.
        self._runner = web.AppRunner(
            self.app(),
            handle_signals=False,
            shutdown_timeout=0.2,
            access_log=access_logger if access_log else None,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.port

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def watch_loop_lag(self) -> None:
        """Starts measuring this simulator's own lateness (``GET /_sim/lag``)."""
        if self.loop_lag is None:
            self.loop_lag = Histogram(LOOP_LAG_BUCKETS_S)
            self.spawn(watch_loop_lag(self.loop_lag.observe))

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Background task tied to the simulator's lifetime (per session, never per frame)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(await request.json())
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.faults))

    async def _lag(self, request: web.Request) -> web.Response:
        if self.loop_lag is None:
            return web.json_response({"error": "loop lag is not being measured"}, status=404)
        # JSON has no infinity: the last bucket's bound is "+Inf", as Prometheus writes it.
        buckets = [["+Inf" if b == float("inf") else b, n] for b, n in self.loop_lag.cumulative()]
        return web.json_response({"buckets": buckets})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"sessions_started": self.sessions_started, "sessions_active": self.sessions_active}
        )


class EnergyVad:
    """Energy-based voice activity detection on PCM16 samples, like a provider's turn detector.

    Speech starts after ``start_ms`` of frames above ``threshold`` RMS and ends after ``end_ms``
    below it. Cheap enough to run per frame in a simulator.
    """

    def __init__(self, sample_rate: int, threshold: float = 500.0, start_ms: int = 60, end_ms: int = 400):
        self.sample_rate = sample_rate
        self.threshold = threshold
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.speaking = False
        self._above_ms = 0.0
        self._below_ms = 0.0

    def feed(self, pcm16: bytes) -> str | None:
        """Returns ``"start"`` or ``"end"`` on a transition, else None."""
        if not pcm16:
            return None
        samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32)
        rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
        ms = samples.size * 1000.0 / self.sample_rate
        if rms >= self.threshold:
            self._above_ms += ms
            self._below_ms = 0.0
            if not self.speaking and self._above_ms >= self.start_ms:
                self.speaking = True
                return "start"
        else:
            self._below_ms += ms
            self._above_ms = 0.0
            if self.speaking and self._below_ms >= self.end_ms:
                self.speaking = False
                return "end"
        return None


def tone_pcm16(freq: float, ms: int, sample_rate: int, amplitude: float = 8000.0) -> bytes:
    """A sine tone, for greetings and replies whose presence tests can detect."""
    n = int(sample_rate * ms / 1000)
    t = np.arange(n, dtype=np.float64) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def fmt_from_name(name: str) -> AudioFormat:
    """``ulaw_8000`` / ``pcm_16000`` style names (ElevenLabs' spelling) to an AudioFormat."""
    enc, _, rate = name.partition("_")
    encoding = {"ulaw": "mulaw", "mulaw": "mulaw", "alaw": "alaw", "pcm": "pcm16"}[enc]
    return AudioFormat(encoding, int(rate))  # type: ignore[arg-type]
