"""One call, bridged: the carrier leg on one side, a provider session on the other.

Tasks per call: the carrier reader (the media WebSocket handler itself) and ONE provider task
that connects, pumps provider events to the carrier, and fails over. Nothing is created per
frame. Audio from the provider goes to the carrier as soon as it arrives: the carrier buffers
and plays it in real time, ``clear`` empties that buffer on barge-in, and marks tell us what the
caller actually heard (which is what providers need for truncation).

All database writes go through the writer without awaiting I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.audio import Transcoder
from gateway.metrics import GatewayStats
from gateway.tracebacks import drop_tracebacks
from providers.base import (
    Audio,
    AudioFormat,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    Mark,
    Notice,
    ProviderError,
    ProviderEvent,
    ProviderSession,
    ToolCall,
    Transcript,
)

with warnings.catch_warnings():  # stdlib audioop on 3.11/3.12 warns; audioop-lts on >= 3.13 does not
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

log = logging.getLogger(__name__)

# Per-frame callables as Finals: C statics under mypyc, not a module attribute looked up per call.
_monotonic: Final = time.monotonic
_ulaw2lin: Final = audioop.ulaw2lin
_alaw2lin: Final = audioop.alaw2lin
_rms: Final = audioop.rms

MARK_EVERY_MS: Final = 400.0  # a carrier mark at most this often: play-out tracking without doubling traffic
FAILOVER_BUFFER_FRAMES: Final = 50  # ~1 s of caller audio kept while (re)connecting a provider
HANGUP_DRAIN_MAX_S: Final = 15.0  # provider hung up: wait at most this long for its farewell to play
SPEECH_RMS: Final = 500  # caller speech threshold (PCM16 RMS) for the silent-provider detector
SPEECH_CHECK_EVERY: Final = 5  # frames: check caller energy on every 5th frame only


class CarrierLink(Protocol):
    """What the session needs of the carrier leg (implemented by the media handler).

    Sends never wait: a carrier that cannot take a message now (leaving, or not reading) has it
    dropped, because audio later than real time is worth nothing. That keeps the play-out path
    synchronous, so an in-process provider's audio reaches the carrier with no task switch.
    """

    out_format: AudioFormat

    def send_media(self, audio: Audio, mark: str | None = None) -> None:
        """``mark``, when given, follows the audio (sent together: one write)."""

    def send_mark(self, name: str) -> None: ...
    def send_clear(self) -> None: ...
    async def hangup(self, reason: str) -> None: ...


class EventSink(Protocol):
    """Where the session records call events and its final row (the storage writer glue)."""

    def event(self, call_id: str, event_type: str, data: dict[str, Any] | None) -> None: ...


@dataclass(slots=True)
class ProviderAttempt:
    """A candidate the router chose: how to connect to it and why it was chosen."""

    provider: str
    reason: str
    connect: Callable[[Sequence[Transcript]], Awaitable[ProviderSession]]
    key_source: str = "platform"
    playback: Any = None  # PlaybackProxy the adapter reads; pointed at the session once it exists
    admit: Callable[[], bool] | None = None  # circuit breaker gate (half-open: one trial at a time)


@dataclass(slots=True)
class CallOutcome:
    status: str  # completed | failed
    reason: str
    provider_used: str
    duration_s: int
    transcript: str
    usage: dict[str, float] = field(default_factory=dict)
    ended_at: float = 0.0


class SessionObserver(Protocol):
    """Health-board hooks (passive observations from every call)."""

    def connected(self, provider: str, latency_s: float) -> None: ...
    def failed(self, provider: str, kind: str, message: str, key_source: str) -> None: ...
    def first_audio(self, provider: str, latency_s: float) -> None: ...
    def dropped(self, provider: str, reason: str) -> None: ...


class _NullObserver:
    def connected(self, provider: str, latency_s: float) -> None: ...
    def failed(self, provider: str, kind: str, message: str, key_source: str) -> None: ...
    def first_audio(self, provider: str, latency_s: float) -> None: ...
    def dropped(self, provider: str, reason: str) -> None: ...


class CallSession:
    """Bridges one call. The media handler feeds carrier events in; ``run_provider`` runs as a task."""

    def __init__(
        self,
        *,
        call_id: str,
        carrier: CarrierLink,
        carrier_in_format: AudioFormat,
        attempts: Sequence[ProviderAttempt],
        events: EventSink,
        stats: GatewayStats,
        connect_deadline_s: float,
        attempt_timeout_s: float | None = None,
        fallback_enabled: bool = True,
        silence_failover_s: float = 5.0,
        observer: SessionObserver | None = None,
        preconnected: asyncio.Task[ProviderSession] | None = None,
    ) -> None:
        self.call_id = call_id
        self.carrier = carrier
        self.carrier_in_format = carrier_in_format
        self._attempts = deque(attempts)
        self._events = events
        self.stats = stats
        self._frames = stats.frames  # compiled counters: bumped on every frame
        self._connect_deadline_s = connect_deadline_s
        self._attempt_timeout_s = attempt_timeout_s or connect_deadline_s
        self._fallback_enabled = fallback_enabled
        self._silence_failover_s = silence_failover_s
        self._observer: SessionObserver = observer or _NullObserver()
        self._preconnected = preconnected
        self._preconnected_for = attempts[0] if attempts else None  # a pre-connection is only ever theirs
        self._finishing = False
        self._failure_reported = False
        self._background: set[asyncio.Task[None]] = set()

        self.started_mono = _monotonic()
        self.last_carrier_msg = self.started_mono
        self.provider: ProviderSession | None = None
        self.provider_name = ""
        self._key_source = "platform"
        self.providers_tried: list[str] = []
        self._to_provider: Transcoder | None = None
        self._to_carrier: Transcoder | None = None
        self._waiting_audio: deque[Audio] = deque(maxlen=FAILOVER_BUFFER_FRAMES)
        self.transcript: list[Transcript] = []
        self.usage_total: dict[str, float] = {}

        # play-out tracking through carrier marks
        self._mark_seq = 0
        self._pending_marks: dict[str, tuple[str | None, float, str | None]] = {}
        self._cleared_marks: set[str] = set()
        self._unmarked_ms = 0.0
        self._current_item: str | None = None
        self._item_sent_ms: dict[str, float] = {}
        self._item_played_ms: dict[str, float] = {}
        self._hangup_mark: str | None = None
        # Outbound audio goes to the carrier in whole 20 ms frames (Telnyx refuses < 20 ms chunks).
        self._out_frame = carrier.out_format.bytes_for_ms(20)
        self._out_remainder = b""

        self._frame_counter = 0
        self.last_caller_loud = 0.0
        self.last_provider_event = self.started_mono
        self._provider_connected_at = 0.0
        self._first_audio_seen = False
        self._lost_provider_at: float | None = None

        self.ended = asyncio.Event()
        self.outcome: CallOutcome | None = None
        self._end_reason: tuple[str, str] | None = None
        self._provider_task: asyncio.Task[None] | None = None
        self._failover_requested: str | None = None
        self._carrier_gone = False
        # A provider asks its proxy how much of its audio the caller heard; _finish lets go of them.
        self._playback_proxies = tuple(a.playback for a in attempts if a.playback is not None)
        for proxy in self._playback_proxies:
            proxy.target = self

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._provider_task = asyncio.get_running_loop().create_task(
            self._run_provider(), name=f"provider:{self.call_id}"
        )

    def carrier_gone(self, reason: str) -> None:
        """The caller hung up or the carrier socket vanished: close the provider promptly."""
        self._carrier_gone = True
        self.request_end("completed", reason)

    @property
    def ending(self) -> bool:
        return self._end_reason is not None

    def request_end(self, status: str, reason: str) -> None:
        """End the call (idempotent). The provider task notices and finishes the work.

        The task is woken by cancellation, but never from inside itself (it is already ending)
        and never once ``_finish`` runs: cancelling that would abort the hang-up or leave the
        provider connection open.
        """
        if self._end_reason is None:
            self._end_reason = (status, reason)
        task = self._provider_task
        if task is None:
            self.ended.set()
        elif not task.done() and not self._finishing and task is not asyncio.current_task():
            task.cancel()

    async def wait_closed(self) -> None:
        if self._provider_task is not None:
            try:
                await self._provider_task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("call %s: provider task failed", self.call_id)
            self._provider_task = None  # its coroutine holds this session: let both go by refcount
        if self.outcome is None:  # the provider task was cancelled before it ever ran
            await self._finish()

    # ------------------------------------------------------------------ carrier → provider
    def on_media(self, audio: Audio) -> Awaitable[None] | None:
        """Hot path: one caller frame. Returns what the caller must still await (a provider send
        that needs the event loop), or None when the frame is already handed over."""
        self._frames.received += 1
        self._frame_counter += 1
        if self._frame_counter % SPEECH_CHECK_EVERY == 0:
            self._track_caller_speech(audio)
        provider = self.provider
        if provider is None:
            self._waiting_audio.append(audio)
            return None
        tc = self._to_provider
        if tc is not None and not tc.is_passthrough:
            converted = tc.convert(audio)
            self._frames.transcoded += 1
            if converted is None:
                return None
            audio = converted
        if provider.send_audio_nowait(audio):
            return None
        return self._send_to_provider(provider, audio)

    async def _send_to_provider(self, provider: ProviderSession, audio: Audio) -> None:
        try:
            await provider.send_audio(audio)
        except (ConnectionError, ProviderError, RuntimeError) as exc:
            self._frames.dropped += 1
            self._request_failover(f"send failed: {exc}")

    def _track_caller_speech(self, audio: Audio) -> None:
        fmt = audio.fmt
        raw = audio.raw
        if fmt.encoding == "mulaw":
            pcm = _ulaw2lin(raw, 2)
        elif fmt.encoding == "alaw":
            pcm = _alaw2lin(raw, 2)
        else:
            pcm = raw
        if _rms(pcm, 2) >= SPEECH_RMS:
            self.last_caller_loud = _monotonic()

    async def on_dtmf(self, digit: str) -> None:
        self._events.event(self.call_id, "dtmf", {"digit": digit})
        if self.provider is not None:
            await self.provider.send_dtmf(digit)

    def on_mark_echo(self, name: str) -> Awaitable[None] | None:
        """The carrier played (or cleared) audio up to mark ``name``.

        Synchronous unless the provider asked for the mark: the gateway's own play-out marks
        (one per ``MARK_EVERY_MS``) then cost no coroutine and no wake of the socket's task.
        """
        if name in self._cleared_marks:
            self._cleared_marks.discard(name)
            return None
        entry = self._pending_marks.pop(name, None)
        if entry is None:
            return None
        item_id, item_ms, provider_mark = entry
        if item_id is not None:
            self._item_played_ms[item_id] = item_ms
        if provider_mark is not None and self.provider is not None:
            return self._forward_mark(self.provider, provider_mark, name)
        self._end_if_farewell_played(name)
        return None

    async def _forward_mark(self, provider: ProviderSession, provider_mark: str, name: str) -> None:
        await provider.on_mark(provider_mark)
        self._end_if_farewell_played(name)

    def _end_if_farewell_played(self, name: str) -> None:
        if name == self._hangup_mark:
            self.request_end("completed", "provider_hangup")

    def played_ms(self, item_id: str) -> int:
        """PlaybackClock for providers: confirmed by marks, never more than was sent."""
        return int(self._item_played_ms.get(item_id, 0.0))

    def check_timers(self, now: float) -> None:
        """Called by the process-wide watchdog about once a second (never per frame).

        A provider is silent when the caller spoke after its last event, then stopped, and it
        still said nothing ``silence_failover_s`` later. A long utterance is not silence: the
        clock only runs once the caller is quiet.
        """
        loud = self.last_caller_loud
        if (
            self.provider is not None
            and self._silence_failover_s > 0
            and loud > self.last_provider_event
            and now - loud > self._silence_failover_s
        ):
            self.last_caller_loud = 0.0
            self._request_failover("provider_silent")

    # ------------------------------------------------------------------ provider task
    def _request_failover(self, reason: str) -> None:
        if self._failover_requested is None and self.provider is not None:
            self._failover_requested = reason
            task = asyncio.get_running_loop().create_task(self.provider.close())
            self._background.add(task)  # closing ends events(): the provider task fails over
            task.add_done_callback(self._background.discard)

    async def _run_provider(self) -> None:
        try:
            while self._end_reason is None:
                provider = await self._connect()
                if provider is None:
                    self.request_end("failed", "no_provider_available")
                    break
                outcome = await self._pump(provider)
                if outcome == "hangup":
                    await self._drain_then_hangup()
                    break
                if outcome == "closed" or self._end_reason is not None:
                    break
                # dropped: fail over to the next candidate with the transcript so far
                self._lost_provider_at = _monotonic()
                reason = self._failover_requested or outcome
                self._failover_requested = None
                self.stats.failovers[reason.split(":")[0]] += 1
                if not self._failure_reported:  # one incident, one bad sample on the board
                    self._observer.dropped(self.provider_name, reason)
                self._events.event(self.call_id, "failover", {"from": self.provider_name, "reason": reason})
                self._detach_provider()
                if not self._fallback_enabled or not self._attempts:
                    self.request_end("failed", f"provider_lost:{reason}")
                    break
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("call %s: provider task failed", self.call_id)
            if self._end_reason is None:
                self._end_reason = ("failed", "internal_error")
        finally:
            await self._finish()

    async def _connect(self) -> ProviderSession | None:
        """Candidates in order within the overall deadline; each gets at most the attempt timeout,
        so a provider that hangs leaves time for the next one."""
        deadline = _monotonic() + self._connect_deadline_s
        while self._attempts and self._end_reason is None:
            attempt = self._attempts.popleft()
            preconnected = None
            if self._preconnected is not None and attempt is self._preconnected_for:
                preconnected, self._preconnected = self._preconnected, None
            remaining = deadline - _monotonic()
            skip = None
            if remaining <= 0:
                skip = "connect deadline passed"
            elif attempt.admit is not None and not attempt.admit():
                skip = "circuit breaker"
            if skip is not None:
                self._events.event(
                    self.call_id,
                    "provider_attempt",
                    {"provider": attempt.provider, "result": "skipped", "reason": skip},
                )
                if preconnected is not None:
                    await discard_connection(preconnected)
                continue
            timeout_s = min(self._attempt_timeout_s, remaining)
            t0 = _monotonic()
            self.providers_tried.append(attempt.provider)
            try:
                if preconnected is not None:
                    provider = await asyncio.wait_for(preconnected, timeout=timeout_s)
                else:
                    provider = await asyncio.wait_for(attempt.connect(tuple(self.transcript)), timeout_s)
            except (ProviderError, TimeoutError, OSError) as exc:
                drop_tracebacks(exc)
                kind = exc.kind.value if isinstance(exc, ProviderError) else ErrorKind.TIMEOUT.value
                message = str(exc) or type(exc).__name__
                self._observer.failed(attempt.provider, kind, message, attempt.key_source)
                self._events.event(
                    self.call_id,
                    "provider_attempt",
                    {"provider": attempt.provider, "result": "failed", "kind": kind, "error": message[:300]},
                )
                log.warning(
                    "call %s: provider %s failed to connect: %s", self.call_id, attempt.provider, message
                )
                if not self._fallback_enabled:
                    return None
                continue
            latency = _monotonic() - t0
            self.stats.observe_connect(attempt.provider, latency)
            self._observer.connected(attempt.provider, latency)
            if self._end_reason is not None:
                # Python 3.11's wait_for drops a cancellation that lands as the connect completes:
                # the end request must not be lost, and this connection must not stay open.
                with contextlib.suppress(Exception):
                    await provider.close()
                return None
            await self._attach(provider, attempt, latency)
            if self._end_reason is not None:
                return None  # _finish closes self.provider
            return provider
        return None

    async def _attach(self, provider: ProviderSession, attempt: ProviderAttempt, latency: float) -> None:
        self.provider_name = attempt.provider
        self._failure_reported = False
        self._key_source = attempt.key_source
        self._provider_connected_at = _monotonic()
        self.last_provider_event = self._provider_connected_at
        self._first_audio_seen = False
        self._to_provider = Transcoder(self.carrier_in_format, provider.input_format)
        self._to_carrier = Transcoder(provider.output_format, self.carrier.out_format)
        self._events.event(
            self.call_id,
            "provider_connected",
            {
                "provider": attempt.provider,
                "reason": attempt.reason,
                "key_source": attempt.key_source,
                "connect_ms": round(latency * 1000, 1),
                "input_format": str(provider.input_format),
                "output_format": str(provider.output_format),
                "passthrough": self._to_provider.is_passthrough and self._to_carrier.is_passthrough,
            },
        )
        # Caller audio that arrived while we were connecting goes first, in order; frames that
        # arrive during the replay queue behind it. Only then do live frames go straight through.
        tc = self._to_provider
        try:
            while self._waiting_audio:
                waiting, self._waiting_audio = self._waiting_audio, deque(maxlen=FAILOVER_BUFFER_FRAMES)
                for audio in waiting:
                    converted = tc.convert(audio)
                    if converted is not None:
                        with contextlib.suppress(ConnectionError, ProviderError):
                            await provider.send_audio(converted)
        except BaseException:  # ended while replaying: the session is not attached yet, close it here
            with contextlib.suppress(Exception):
                await provider.close()
            raise
        self.provider = provider
        provider.deliver_now = self._deliver_now

    def _deliver_now(self, event: ProviderEvent) -> bool:
        """An in-process provider's event, handed over while the pump is idle (so order holds).
        Agent audio is played at once; anything else goes through ``events()`` (False)."""
        if type(event) is not AudioOut or self.provider is None:
            return False
        self.last_provider_event = _monotonic()
        self._play(event)
        return True

    def _detach_provider(self) -> None:
        provider = self.provider
        if provider is not None:
            provider.deliver_now = None
            self._collect_usage(provider)
        self.provider = None
        self._to_provider = None
        self._to_carrier = None

    def _collect_usage(self, provider: ProviderSession) -> None:
        self._frames.dropped += provider.frames_dropped
        u = provider.usage
        for key, value in (
            ("audio_in_ms", u.audio_in_ms),
            ("audio_out_ms", u.audio_out_ms),
            ("characters", u.characters),
            ("input_tokens", u.input_tokens),
            ("output_tokens", u.output_tokens),
        ):
            if value:
                self.usage_total[key] = self.usage_total.get(key, 0.0) + value

    async def _pump(self, provider: ProviderSession) -> str:
        """Provider events → carrier. Returns 'hangup', 'closed' (we ended) or 'dropped'."""
        try:
            async for event in provider.events():
                self.last_provider_event = _monotonic()
                if type(event) is AudioOut:
                    self._play(event)
                elif type(event) is Interrupt:
                    self._clear(event.reason)
                elif type(event) is Transcript:
                    if event.final and event.text:
                        self.transcript.append(event)
                elif type(event) is Mark:
                    self._send_mark(provider_mark=event.name)
                elif type(event) is ToolCall:
                    self._events.event(
                        self.call_id,
                        "tool_call",
                        {
                            "provider": self.provider_name,
                            "name": event.name,
                            "call_id": event.call_id,
                            "arguments": dict(event.arguments),
                            "result": event.result,
                        },
                    )
                elif type(event) is Hangup:
                    self._events.event(
                        self.call_id,
                        "provider_hangup",
                        {"provider": self.provider_name, "reason": event.reason},
                    )
                    return "hangup"
                elif type(event) is Failure:
                    self._events.event(
                        self.call_id,
                        "error",
                        {
                            "provider": self.provider_name,
                            "kind": event.kind.value,
                            "message": event.message[:300],
                            "fatal": event.fatal,
                        },
                    )
                    if event.fatal:
                        self._observer.failed(
                            self.provider_name, event.kind.value, event.message, self._key_source
                        )
                        self._failure_reported = True
                        self._failover_requested = self._failover_requested or f"error:{event.kind.value}"
                        await provider.close()
                        return "dropped"
                elif type(event) is Notice:
                    self._events.event(
                        self.call_id,
                        "provider_notice",
                        {"provider": self.provider_name, "kind": event.kind, **dict(event.details)},
                    )
        except (ConnectionError, ProviderError) as exc:
            self._failover_requested = self._failover_requested or f"error:{exc}"
        if self._end_reason is not None:
            return "closed"
        return "dropped"

    def _play(self, event: AudioOut) -> None:
        """Agent audio → the carrier, in whole 20 ms frames, with a mark every ``MARK_EVERY_MS``."""
        frames = self._frames
        tc = self._to_carrier
        audio = event.audio
        if tc is not None and not tc.is_passthrough:
            converted = tc.convert(audio)
            frames.transcoded += 1
            if converted is None:
                return
            audio = converted
        if not self._first_audio_seen:
            self._first_audio_seen = True
            now = _monotonic()
            self._observer.first_audio(self.provider_name, now - self._provider_connected_at)
            if self._lost_provider_at is not None:  # what the caller heard as a gap during failover
                gap_ms = round((now - self._lost_provider_at) * 1000, 1)
                self._lost_provider_at = None
                self._events.event(
                    self.call_id, "audio_resumed", {"provider": self.provider_name, "gap_ms": gap_ms}
                )
        item = event.item_id
        if item != self._current_item and self._current_item is not None and self._unmarked_ms:
            self._send_mark()
        if item is not None and item != self._current_item:
            self._item_sent_ms[item] = 0.0
            if len(self._item_sent_ms) > 16:  # keep only recent items: bounded memory on long calls
                for old in list(self._item_sent_ms)[:-8]:
                    self._item_sent_ms.pop(old, None)
                    self._item_played_ms.pop(old, None)
        self._current_item = item
        if self._out_remainder or audio.nbytes % self._out_frame:
            buf = self._out_remainder + audio.raw
            cut = len(buf) - len(buf) % self._out_frame
            self._out_remainder = buf[cut:]
            if not cut:
                return
            audio = Audio(audio.fmt, raw=buf[:cut])
        ms = audio.duration_ms
        if item is not None:
            self._item_sent_ms[item] = self._item_sent_ms.get(item, 0.0) + ms
        self._unmarked_ms += ms
        # A due play-out mark rides in the same write as the frame it follows (one syscall).
        self.carrier.send_media(audio, self._new_mark() if self._unmarked_ms >= MARK_EVERY_MS else None)
        frames.sent += 1

    def _send_mark(self, provider_mark: str | None = None) -> str:
        name = self._new_mark(provider_mark)
        self.carrier.send_mark(name)
        return name

    def _new_mark(self, provider_mark: str | None = None) -> str:
        """Registers the next mark (the carrier echoes it once the audio sent so far has played)."""
        self._mark_seq += 1
        name = f"m{self._mark_seq}"
        item = self._current_item
        item_ms = self._item_sent_ms.get(item, 0.0) if item is not None else 0.0
        self._pending_marks[name] = (item, item_ms, provider_mark)
        self._unmarked_ms = 0.0
        return name

    def _clear(self, reason: str) -> None:
        """Barge-in: the carrier drops what it buffered; marks pending now mean 'cleared', not 'played'."""
        self.carrier.send_clear()
        self._out_remainder = b""
        self._cleared_marks.update(self._pending_marks)
        self._pending_marks.clear()
        self._unmarked_ms = 0.0
        if self._to_carrier is not None:
            self._to_carrier.reset()
        self._events.event(self.call_id, "interruption", {"provider": self.provider_name, "reason": reason})

    async def _drain_then_hangup(self) -> None:
        """Provider said goodbye: let the farewell play (mark echo), then end the carrier leg."""
        if self._out_remainder:  # the farewell's last partial frame, padded with silence
            pad = self._out_frame - len(self._out_remainder)
            silence = b"\xff" if self.carrier.out_format.encoding == "mulaw" else b"\x00"
            self.carrier.send_media(Audio(self.carrier.out_format, raw=self._out_remainder + silence * pad))
            self._out_remainder = b""
        self._hangup_mark = self._send_mark()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), HANGUP_DRAIN_MAX_S)
        if self._end_reason is None:
            self._end_reason = ("completed", "provider_hangup")

    async def _finish(self) -> None:
        self._finishing = True
        provider = self.provider
        if provider is not None:
            with contextlib.suppress(Exception):
                await provider.close()
            self._detach_provider()
        if self._preconnected is not None:  # a pre-connection nobody used
            task, self._preconnected = self._preconnected, None
            await discard_connection(task)
        status, reason = self._end_reason or ("completed", "ended")
        elapsed = _monotonic() - self.started_mono  # the call ends now, not after the hang-up round trip
        ended_at = time.time()
        if not self._carrier_gone:
            with contextlib.suppress(Exception):
                await self.carrier.hangup(reason)
        self.outcome = CallOutcome(
            status=status,
            reason=reason,
            provider_used=self.provider_name
            or (self.providers_tried[-1] if self.providers_tried else "none"),
            duration_s=max(0, math.ceil(elapsed)),
            transcript="\n".join(f"{t.role}: {t.text}" for t in self.transcript),
            usage=dict(self.usage_total),
            ended_at=ended_at,
        )
        for proxy in self._playback_proxies:  # they point back here: a cycle only a full GC frees
            proxy.target = None
        self.ended.set()


async def discard_connection(task: asyncio.Task[ProviderSession]) -> None:
    """Cancel a pending connection, or close the session it already produced."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        session = await task
        await session.close()
