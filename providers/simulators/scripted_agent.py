"""The scripted agent behind the Retell, Vapi and Bolna simulators, plus the test signals it hears.

Each of those simulators speaks its provider's wire protocol exactly but shares one behaviour:
greet (or wait), detect caller utterances with ``EnergyVad``, echo each one back faster than real
time, get interrupted when the caller talks over its simulated play-out, call a tool or hang up
after a configured number of utterances, and obey ``Faults``. Only the wire messages differ, so
subclasses implement a handful of hooks and the timing logic lives here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from aiohttp import web

from providers.base import Audio, AudioFormat, Mark, ProviderEvent, ProviderSession
from providers.simulators.base import EnergyVad, Faults, SimulatorServer, tone_pcm16

# --------------------------------------------------------------------------------------------
# G.711 μ-law (simulator side; the gateway has its own codecs)
# --------------------------------------------------------------------------------------------


def _build_ulaw_tables() -> tuple[np.ndarray, np.ndarray]:
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    decode = np.where(u & 0x80, -magnitude, magnitude).astype("<i2")

    samples = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    mag = np.minimum(np.abs(samples), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    mant = (mag >> (exp + 3)) & 0x0F
    encode = (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8)
    return decode, encode


_ULAW_DECODE, _ULAW_ENCODE = _build_ulaw_tables()


def ulaw_to_pcm16(data: bytes) -> bytes:
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.int32) + 32768
    return _ULAW_ENCODE[samples].tobytes()


def to_pcm16(data: bytes, fmt: AudioFormat) -> bytes:
    if fmt.encoding == "mulaw":
        return ulaw_to_pcm16(data)
    if fmt.encoding == "pcm16":
        return data
    raise ValueError(f"simulators do not speak {fmt}")


def from_pcm16(pcm16: bytes, fmt: AudioFormat) -> bytes:
    return pcm16_to_ulaw(pcm16) if fmt.encoding == "mulaw" else pcm16


def convert_audio(data: bytes, src: AudioFormat, dst: AudioFormat) -> bytes:
    """Caller audio in ``src`` re-encoded as ``dst`` (bytes unchanged when the formats match)."""
    if src == dst:
        return data
    pcm = resample_pcm16(to_pcm16(data, src), src.sample_rate, dst.sample_rate)
    return from_pcm16(pcm, dst)


def resample_pcm16(pcm16: bytes, src_rate: int, dst_rate: int) -> bytes:
    if src_rate == dst_rate or not pcm16:
        return pcm16
    samples = np.frombuffer(pcm16, dtype="<i2")
    out = soxr.resample(samples, src_rate, dst_rate)
    return np.asarray(out, dtype="<i2").tobytes()


# --------------------------------------------------------------------------------------------
# Test signals: what a "caller" says and how tests recognise what the agent said back
# --------------------------------------------------------------------------------------------


def utterance_frames(
    freq: float, speech_ms: int, fmt: AudioFormat, silence_ms: int = 500, frame_ms: int = 20
) -> list[bytes]:
    """A tone "utterance" followed by silence (long enough to end the VAD turn), in ``frame_ms`` frames."""
    pcm = tone_pcm16(freq, speech_ms, fmt.sample_rate) + bytes(2 * fmt.sample_rate * silence_ms // 1000)
    data = from_pcm16(pcm, fmt)
    step = fmt.bytes_for_ms(frame_ms)
    return [data[i : i + step] for i in range(0, len(data), step)]


def silence_frames(ms: int, fmt: AudioFormat, frame_ms: int = 20) -> list[bytes]:
    frame = from_pcm16(bytes(2 * fmt.sample_rate * frame_ms // 1000), fmt)
    return [frame] * (ms // frame_ms)


def dominant_frequency(data: bytes, fmt: AudioFormat) -> float:
    """Strongest frequency in ``data`` (Hz), 0 for silence: tells a greeting from an echo."""
    samples = np.frombuffer(to_pcm16(data, fmt), dtype="<i2").astype(np.float64)
    if samples.size == 0 or not samples.any():
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * fmt.sample_rate / samples.size)


# --------------------------------------------------------------------------------------------
# The script and its per-session driver
# --------------------------------------------------------------------------------------------


ABNORMAL_CLOSE = 1006  # never sent in a close frame: ``close_code=1006`` drops the TCP connection


@dataclass(slots=True)
class Script:
    """What the simulated agent does; tests change it on ``simulator.script``."""

    greeting_first: bool = True
    greeting_ms: int = 400
    greeting_hz: float = 440.0
    tool_after: int | None = None  # utterance number that triggers a tool call (protocols that have one)
    tool_name: str = "lookup_order"
    tool_arguments: dict[str, Any] = field(default_factory=lambda: {"order_id": "A-17"})
    tool_timeout_s: float = 5.0
    hangup_after: int | None = None  # utterance number after which the agent says farewell and ends
    farewell_ms: int = 300
    farewell_hz: float = 660.0
    chunk_ms: int = 100  # agent audio chunk size on the wire
    speedup: float = 5.0  # agent audio is sent this much faster than real time
    # Relay mode (benchmarks): no greeting, no turns; every caller frame goes straight back in the
    # output format, so latency through a real provider socket can be timed frame by frame.
    relay: bool = False


@dataclass(slots=True)
class SessionRecord:
    """What one simulated session received, for test assertions."""

    handshake: dict[str, Any] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)  # parsed control messages, in order
    audio_frames: int = 0
    audio_bytes: int = 0
    utterances: int = 0
    interruptions: int = 0
    marks_echoed: list[str] = field(default_factory=list)
    tool_results: list[Any] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    close_code: int | None = None
    ended_by: str | None = None  # "client", "agent", "fault", "error"


class ScriptedSession(ABC):
    """Drives one simulated conversation; the provider subclass supplies the wire messages.

    The play-out clock models the caller's speaker: agent audio is *sent* faster than real time
    but *heard* in real time, so the agent counts as speaking until the clock runs out. Caller
    speech before then is a barge-in, exactly as real providers judge it.
    """

    def __init__(
        self, sim: SimulatorServer, script: Script, in_fmt: AudioFormat, out_fmt: AudioFormat
    ) -> None:
        self.sim = sim
        self.faults: Faults = sim.faults
        self.script = script
        self.in_fmt = in_fmt
        self.out_fmt = out_fmt
        self.record = SessionRecord()
        self.vad = EnergyVad(in_fmt.sample_rate)
        self._preroll: deque[bytes] = deque(maxlen=max(1, self.vad.start_ms // 10))
        self._utterance = bytearray()
        self._play_until = 0.0
        self._speech_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.Task[None]] = []
        self.ended = False
        self.transport: asyncio.Transport | None = None  # set by the simulator for hard drops

    # -- provider hooks --------------------------------------------------------------------------
    @abstractmethod
    async def send_agent_audio(self, data: bytes) -> None:
        """One chunk of agent audio, already in ``out_fmt``."""

    async def on_user_turn(self, n: int, speech_ms: float) -> None:  # noqa: B027 - optional hook
        """The caller finished utterance ``n`` (transcripts, speech updates)."""

    async def on_agent_turn(self, n: int, text: str) -> None:  # noqa: B027 - optional hook
        """The agent is about to speak ``text`` (n = 0 for the greeting)."""

    async def on_agent_done(self, n: int) -> None:  # noqa: B027 - optional hook
        """The agent finished sending its turn."""

    async def on_caller_speech_start(self) -> None:  # noqa: B027 - optional hook
        """VAD detected caller speech (barge-in or not)."""

    @abstractmethod
    async def send_interrupt(self) -> None:
        """The provider's interruption/clear message."""

    async def invoke_tool(self, name: str, arguments: dict[str, Any]) -> None:  # noqa: B027
        """Ask the client to run a tool and wait for its answer (no-op where the protocol has none)."""

    @abstractmethod
    async def end_call(self, reason: str) -> None:
        """The provider's normal end of conversation (after the farewell audio)."""

    @abstractmethod
    async def send_error(self) -> None:
        """The provider's error event (then whatever the provider does next)."""

    @abstractmethod
    async def drop(self, code: int | None) -> None:
        """Close abruptly with ``code`` (None: the provider's usual abnormal code)."""

    # -- lifecycle -------------------------------------------------------------------------------
    @abstractmethod
    async def serve(self) -> None:
        """Read the client's socket until it ends."""

    async def run(
        self, ws: web.WebSocketResponse, companion: Callable[[], Coroutine[Any, Any, None]] | None = None
    ) -> None:
        """The whole conversation: begin, serve (with an optional companion task such as pings),
        then stop everything and record how the socket closed."""
        self.begin()
        helper = self.sim.spawn(companion()) if companion is not None else None
        try:
            await self.serve()
        finally:
            if helper is not None:
                helper.cancel()
            self.finish()
            self.record.close_code = ws.close_code

    def begin(self) -> None:
        """Start the greeting (if greeting-first) and the fault timers."""
        self.sim.sessions_started += 1
        self.sim.sessions_active += 1
        if self.script.greeting_first and not self.script.relay:
            greeting = tone_pcm16(self.script.greeting_hz, self.script.greeting_ms, self.out_fmt.sample_rate)
            self._speech_task = self.sim.spawn(self._turn(0, greeting, "greeting"))
        f = self.faults
        for delay, action in (
            (f.close_after_s, self._fault_drop),
            (f.error_after_s, self._fault_error),
            (f.expire_after_s, self._fault_expire),
        ):
            if delay is not None:
                self._timers.append(self.sim.spawn(self._after(delay, action)))

    def finish(self) -> None:
        """The socket is gone: stop everything this session started."""
        if self._speech_task is not None:
            self._speech_task.cancel()
        for t in self._timers:
            t.cancel()
        self.sim.sessions_active -= 1

    def abort_connection(self) -> bool:
        """Drop the TCP connection without a close frame (what a crashed provider looks like)."""
        if self.transport is None:
            return False
        self.transport.abort()
        return True

    @property
    def speaking(self) -> bool:
        return time.monotonic() < self._play_until

    async def relay(self, data: bytes) -> None:
        """Relay mode: one caller frame (in ``in_fmt``) straight back as agent audio."""
        if not self.faults.mute:
            await self.send_agent_audio(convert_audio(data, self.in_fmt, self.out_fmt))

    async def hear(self, pcm16: bytes) -> None:
        """Caller audio (PCM16 at ``in_fmt.sample_rate``), one frame at a time."""
        edge = self.vad.feed(pcm16)
        if edge == "start":
            self._utterance = bytearray(b"".join(self._preroll))
            self._utterance += pcm16
            await self._caller_started()
        elif self.vad.speaking:
            self._utterance += pcm16
        elif edge == "end":
            await self._caller_finished(len(pcm16))
        else:
            self._preroll.append(pcm16)

    async def _caller_started(self) -> None:
        await self.on_caller_speech_start()
        barge_in = self.speaking  # judged on what the caller still hears, not on what was sent
        if self._speech_task is not None and not self._speech_task.done():
            self._speech_task.cancel()  # a reply not yet spoken is abandoned too, as real agents do
            with contextlib.suppress(asyncio.CancelledError):
                await self._speech_task
        if barge_in and not self.ended:
            self._play_until = 0.0
            self.record.interruptions += 1
            await self.send_interrupt()

    async def _caller_finished(self, last_frame_bytes: int) -> None:
        # The buffer ends with the VAD's end-of-turn silence (minus the frame that closed it).
        silence = 2 * self.in_fmt.sample_rate * self.vad.end_ms // 1000 - last_frame_bytes
        speech = bytes(self._utterance[: max(0, len(self._utterance) - silence)])
        self._utterance = bytearray()
        self.record.utterances += 1
        n = self.record.utterances
        echo = resample_pcm16(speech, self.in_fmt.sample_rate, self.out_fmt.sample_rate)
        self._speech_task = self.sim.spawn(self._reply(n, speech, echo))

    async def _reply(self, n: int, speech: bytes, echo: bytes) -> None:
        if self.faults.reply_delay_ms:
            await asyncio.sleep(self.faults.reply_delay_ms / 1000)
        await self.on_user_turn(n, len(speech) * 500 / self.in_fmt.sample_rate)
        if self.script.tool_after == n:
            await self.invoke_tool(self.script.tool_name, dict(self.script.tool_arguments))
        await self._turn(n, echo, f"echo {n}")
        if self.script.hangup_after == n:
            farewell = tone_pcm16(self.script.farewell_hz, self.script.farewell_ms, self.out_fmt.sample_rate)
            await self._turn(n, farewell, "goodbye")
            self.ended = True
            self.record.ended_by = "agent"
            await self.end_call("assistant-ended-call")

    async def _turn(self, n: int, pcm16: bytes, text: str) -> None:
        await self.on_agent_turn(n, text)
        await self._speak(pcm16)
        await self.on_agent_done(n)

    async def _speak(self, pcm16: bytes) -> None:
        data = from_pcm16(pcm16, self.out_fmt)
        step = self.out_fmt.bytes_for_ms(self.script.chunk_ms)
        pace = self.script.chunk_ms / 1000 / self.script.speedup
        for i in range(0, len(data), step):
            chunk = data[i : i + step]
            if not self.faults.mute:
                await self.send_agent_audio(chunk)
            self._play_until = (
                max(self._play_until, time.monotonic()) + self.out_fmt.ms_for_bytes(len(chunk)) / 1000
            )
            await asyncio.sleep(pace)

    async def _after(self, delay: float, action: Any) -> None:
        await asyncio.sleep(delay)
        if not self.ended:
            self.ended = True
            await action()

    async def _fault_drop(self) -> None:
        self.record.ended_by = "fault"
        await self.drop(self.faults.close_code)

    async def _fault_error(self) -> None:
        self.record.ended_by = "error"
        await self.send_error()

    async def _fault_expire(self) -> None:
        self.record.ended_by = "agent"
        await self.end_call("exceeded-max-duration")


# --------------------------------------------------------------------------------------------
# Client-side harness: drive an adapter session against a simulator (tests, load probes)
# --------------------------------------------------------------------------------------------


class EventLog:
    """Drains a ``ProviderSession``'s events into a list that callers can wait on.

    With ``echo_marks`` it also plays an instant carrier: every ``Mark`` is acknowledged at once.
    """

    def __init__(self, session: ProviderSession, echo_marks: bool = False) -> None:
        self.session = session
        self.echo_marks = echo_marks
        self.events: list[ProviderEvent] = []
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            async for event in self.session.events():
                if self.echo_marks and isinstance(event, Mark):
                    await self.session.on_mark(event.name)
                async with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            self.ended.set()
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[ProviderEvent], bool], within_s: float = 3.0
    ) -> ProviderEvent:
        """The first event (already seen or coming) matching ``predicate``; TimeoutError otherwise."""
        async with asyncio.timeout(within_s), self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if self.ended.is_set():
                    raise AssertionError(f"events ended without a match: {self.events!r}")
                await self._changed.wait()

    def of_type(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


async def say(session: ProviderSession, frames: list[bytes], fmt: AudioFormat) -> None:
    """Send caller frames as fast as the socket takes them (VAD counts samples, not wall time)."""
    for frame in frames:
        await session.send_audio(Audio(fmt, raw=frame))
        await asyncio.sleep(0)
