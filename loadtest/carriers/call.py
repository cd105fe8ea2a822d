"""One simulated carrier call over real sockets: signed webhook, media WebSocket, paced audio, play-out."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol
from urllib.parse import urlencode

import aiohttp

from loadtest.audio import FRAME_MS, ToneBursts, build_track
from loadtest.carriers.markup import MarkupError, Refusal, StreamTarget, parse_answer
from loadtest.carriers.plan import CallPlan, CallResult, Credentials, EndedBy
from loadtest.carriers.signing import telnyx_private_key, telnyx_signature, twilio_signature
from loadtest.carriers.wire import MarkOut, MediaOut, ProtocolViolation, TelnyxWire, TwilioWire
from loadtest.carriers.ws import OP_TEXT, ClientWebSocket
from loadtest.codec import Encoding, bytes_per_second, decode_to_float, silence
from loadtest.pacer import Pacer, default_pacer
from loadtest.playout import PlayoutBuffer
from loadtest.timehist import RunHistograms
from loadtest.tonedetect import ToneOnsetDetector

if TYPE_CHECKING:
    from loadtest.carriers.telnyx_api import TelnyxApi

log = logging.getLogger(__name__)

FRAME_S: Final = FRAME_MS / 1000
_NEVER: Final = 1 << 62  # a frame index no call reaches
_DETECT_BATCH: Final = 4  # received frames of sound fed to the tone detector at once, at most
_JITTER_GAIN: Final = 1 / 16  # RFC 3550 interarrival-jitter smoothing
# How far before a chunk's first sample an estimated onset may fall and still belong to that chunk.
ONSET_SLACK_S: Final = 0.002


class _Chunk(NamedTuple):
    """Where a received chunk sits in the returned stream, when it arrived, and when it plays."""

    position: int
    arrival: float
    play_start: float


class MediaTap(Protocol):
    """Sees the media socket as the carrier does (tests): each text message, and when it closed."""

    def message(self, at: float, data: bytes) -> None: ...

    def closed(self, at: float) -> None: ...


async def place_call(
    session: aiohttp.ClientSession,
    base_url: str,
    plan: CallPlan,
    *,
    credentials: Credentials | None = None,
    pacer: Pacer | None = None,
    telnyx_api: TelnyxApi | None = None,
    on_placed: Callable[[CallResult], None] | None = None,
    tap: MediaTap | None = None,
    histograms: RunHistograms | None = None,
) -> CallResult:
    """Places one call against the gateway at ``base_url`` and plays it out per ``plan``.

    Never raises for gateway misbehaviour: HTTP errors, bad TwiML/TeXML, socket failures and protocol
    violations land in ``CallResult.errors``. ``telnyx_api`` receives the gateway's REST hang-ups;
    ``on_placed`` sees the result object as soon as it exists, so a monitor can watch it fill in;
    ``tap`` sees every text message the gateway sent, with its arrival time. Latency and lateness
    go into ``histograms`` (a load run's, shared by its calls) or, without it, the call's own.
    """
    creds = credentials or Credentials.from_env()
    pacer = pacer or default_pacer()
    if plan.carrier == "twilio":
        call_sid = "CA" + secrets.token_hex(16)
    else:
        call_sid = "v3:" + secrets.token_urlsafe(27)
    placed_at = time.monotonic()
    result = CallResult(
        carrier=plan.carrier,
        call_sid=call_sid,
        placed_at=placed_at,
        histograms=histograms or RunHistograms.starting(placed_at),
    )
    if on_placed is not None:
        on_placed(result)
    try:
        target = await _answer(session, base_url, plan, creds, result)
        if target is not None:
            await _stream(plan, creds, target, result, pacer, telnyx_api, tap)
    except (aiohttp.ClientError, TimeoutError, OSError, MarkupError, ValueError) as exc:
        result.add_error(f"{type(exc).__name__}: {exc}")
        result.ended_by = result.ended_by or "error"
    finally:
        result.ended_at = time.monotonic()
    return result


async def _answer(
    session: aiohttp.ClientSession, base_url: str, plan: CallPlan, creds: Credentials, result: CallResult
) -> StreamTarget | None:
    """The voice webhook, signed like the carrier signs it; None when refused or failed."""
    base = base_url.rstrip("/")
    params = {
        "CallSid": result.call_sid,
        "From": plan.from_,
        "To": plan.to,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    headers: dict[str, str]
    body: bytes | dict[str, str]
    if plan.carrier == "twilio":
        if not creds.twilio_auth_token:
            raise ValueError("no Twilio auth token (--twilio-auth-token or VOICEGW_TWILIO_AUTH_TOKEN)")
        url = base + "/twilio/voice"
        params |= {
            "AccountSid": creds.twilio_account_sid,
            "ApiVersion": "2010-04-01",
            "Called": plan.to,
            "Caller": plan.from_,
        }
        headers = {"X-Twilio-Signature": twilio_signature(creds.twilio_auth_token, url, params)}
        body = params
    else:
        if not creds.telnyx_private_key:
            raise ValueError("no Telnyx private key (--telnyx-private-key or VOICEGW_TELNYX_PRIVATE_KEY)")
        url = base + "/telnyx/voice"
        params["AccountSid"] = str(uuid.UUID(int=0x7E1E))
        body = urlencode(params).encode("ascii")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "telnyx-timestamp": timestamp,
            "telnyx-signature-ed25519": telnyx_signature(
                telnyx_private_key(creds.telnyx_private_key), timestamp, body
            ),
        }
    timeout = aiohttp.ClientTimeout(total=plan.connect_timeout_s)
    async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
        result.http_status = resp.status
        text = await resp.text()
    if resp.status != 200:
        result.add_error(f"webhook answered HTTP {resp.status}: {text[:200]}")
        result.ended_by = "error"
        return None
    answer = parse_answer(text)
    if isinstance(answer, Refusal):
        result.refused = True
        result.refusal_text = answer.text
        result.ended_by = "gateway"
        return None
    result.stream_url = answer.url
    result.call_id = answer.parameters.get("call_id")
    return answer


async def _stream(
    plan: CallPlan,
    creds: Credentials,
    target: StreamTarget,
    result: CallResult,
    pacer: Pacer,
    telnyx_api: TelnyxApi | None,
    tap: MediaTap | None,
) -> None:
    wire: TwilioWire | TelnyxWire
    headers: dict[str, str] = {}
    if plan.carrier == "twilio":
        assert creds.twilio_auth_token is not None
        wire = TwilioWire(creds.twilio_account_sid, result.call_sid, "MZ" + secrets.token_hex(16))
        # Twilio signs the upgrade over the wss URL with no params (telephony.md 1.9).
        headers["X-Twilio-Signature"] = twilio_signature(creds.twilio_auth_token, target.url, {})
        in_encoding: Encoding = "PCMU"
        out_encoding: Encoding = "PCMU"
        out_rate = 8000
    else:
        in_encoding = plan.telnyx_encoding
        out_encoding, out_rate = _telnyx_outbound_format(target, result)
        wire = TelnyxWire(
            call_control_id=result.call_sid,
            stream_id=str(uuid.uuid4()),
            user_id=str(uuid.UUID(int=0x7E1E)),
            call_session_id=str(uuid.uuid4()),
            from_=plan.from_,
            to=plan.to,
            encoding=in_encoding,
            sample_rate=plan.inbound_rate(),
            outbound_bytes_per_second=bytes_per_second(out_encoding, out_rate),
        )
    result.received_encoding, result.received_rate = out_encoding, out_rate
    async with asyncio.timeout(plan.connect_timeout_s):
        ws = await ClientWebSocket.connect(target.url, headers)
    call = _Call(plan, result, wire, ws, pacer, in_encoding, out_encoding, out_rate, tap)
    if telnyx_api is not None and plan.carrier == "telnyx":
        telnyx_api.register(result.call_sid, call)
    try:
        await call.run(target.parameters)
    finally:
        if telnyx_api is not None:
            telnyx_api.unregister(result.call_sid)
        await ws.close()
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason


def _telnyx_outbound_format(target: StreamTarget, result: CallResult) -> tuple[Encoding, int]:
    """The codec the gateway will send, from the TeXML attributes (defaults per telephony.md 2.1)."""
    attrs = target.attributes
    if attrs.get("bidirectionalMode", "mp3") != "rtp":
        result.add_error(
            'TeXML <Stream> lacks bidirectionalMode="rtp": Telnyx would drop the gateway\'s audio'
        )
    codec = attrs.get("bidirectionalCodec", "PCMU")
    if codec not in ("PCMU", "PCMA", "L16"):
        raise MarkupError(f"unsupported bidirectionalCodec {codec!r}")
    rate = int(attrs.get("bidirectionalSamplingRate", "8000"))
    return codec, rate  # type: ignore[return-value]


class _Call:
    """The live media leg: paced sending (a :class:`PacedStream`), receiving, play-out and latency.

    Nothing here waits per frame: the pacer calls ``on_due`` and the socket calls ``_on_message``
    synchronously, and every send is written at once. Slots (here and in the per-frame helpers)
    keep each object's fields together: with hundreds of calls, cache misses dominate a frame.
    """

    __slots__ = (
        "_bytes_per_sample", "_chunks", "_clock", "_closing", "_detect_pending",
        "_detect_pending_samples", "_detector", "_dtmf", "_dtmf_frame", "_dtmf_next", "_frame_bytes",
        "_frame_i", "_frames", "_frames_wrap", "_held", "_known_media", "_last_arrival",
        "_last_duration", "_latency", "_lateness", "_match_window", "_n", "_out_bps", "_out_encoding",
        "_out_rate", "_pacer", "_plan", "_playout", "_playout_latency", "_received", "_reorder_every",
        "_result", "_send_refused", "_sending_done", "_sent_bursts", "_silent_frame", "_silent_samples",
        "_t0", "_tap", "_total_frames", "_wire", "_ws",
    )  # fmt: skip

    def __init__(
        self,
        plan: CallPlan,
        result: CallResult,
        wire: TwilioWire | TelnyxWire,
        ws: ClientWebSocket,
        pacer: Pacer,
        in_encoding: Encoding,
        out_encoding: Encoding,
        out_rate: int,
        tap: MediaTap | None = None,
    ) -> None:
        self._plan = plan
        self._tap = tap
        self._result = result
        assert result.histograms is not None
        self._latency = result.histograms.latency
        self._playout_latency = result.histograms.playout
        self._lateness = result.histograms.lateness
        self._wire = wire
        self._known_media = wire.known_media
        self._ws = ws
        self._pacer = pacer
        self._clock = pacer.clock
        in_rate = plan.inbound_rate()
        self._frames, self._frames_wrap = build_track(plan.audio, in_encoding, in_rate).playlist()
        self._frame_i = 0  # index in _frames of the next frame to send
        self._frame_bytes = bytes_per_second(in_encoding, in_rate) * FRAME_MS // 1000
        self._out_encoding = out_encoding
        self._out_rate = out_rate
        self._out_bps = bytes_per_second(out_encoding, out_rate)
        self._total_frames = round(plan.duration_s / FRAME_S) if plan.hangup else _NEVER
        self._dtmf = sorted(plan.dtmf)
        self._dtmf_next = 0
        self._dtmf_frame = 0 if self._dtmf else _NEVER  # checked from this frame index on
        self._reorder_every = plan.reorder_every
        self._n = 0
        self._t0 = 0.0
        self._playout = PlayoutBuffer(self._out_bps, keep_audio=plan.keep_audio)
        self._received = bytearray() if plan.keep_audio else None
        self._detector: ToneOnsetDetector | None = None
        self._match_window = 0.0
        if isinstance(plan.audio, ToneBursts):
            tone = plan.audio
            self._detector = ToneOnsetDetector(tone.freq_hz, out_rate, tone.amplitude)
            # A returned onset is matched to a burst sent at most this long before it arrived.
            self._match_window = 0.9 * tone.period_ms / 1000
        # Most returned frames of an echo are digital silence; spotting them by bytes skips all maths.
        self._silent_samples = out_rate * FRAME_MS // 1000
        self._bytes_per_sample = 2 if out_encoding == "L16" else 1
        self._detect_pending: list[bytes] = []  # received sound not yet fed to the detector
        self._detect_pending_samples = 0
        self._silent_frame = silence(out_encoding, self._silent_samples)
        self._held: bytes | None = None
        self._sent_bursts: deque[float] = deque()
        self._chunks: deque[_Chunk] = deque(maxlen=16)
        self._last_arrival: float | None = None
        self._last_duration = 0.0
        self._sending_done = asyncio.Event()
        self._closing = False  # we are ending the call (or have seen it end)
        self._send_refused = False

    async def run(self, parameters: dict[str, str]) -> None:
        result = self._result
        ws = self._ws
        ws.start(self._on_message if self._tap is None else self._on_tapped_message)
        try:
            self._send(self._wire.connected())
            self._send(self._wire.start(parameters))
            self._t0 = self._pacer.start_time()
            result.media_started_at = self._t0
            self._pacer.add(self, self._t0)
            if self._plan.hangup:
                await _first(self._sending_done.wait(), ws.wait_closed())
                if not ws.closed:
                    await self._drain()
                    await self.hang_up("carrier")
            else:
                try:
                    await asyncio.wait_for(ws.wait_closed(), self._plan.duration_s)
                except TimeoutError:
                    result.add_error(f"gateway did not end the call within {self._plan.duration_s} s")
                    await self.hang_up("carrier")
            await ws.wait_closed()
        finally:
            self._on_closed()
            self._finish()

    async def _drain(self) -> None:
        """Keeps the socket open until the reply audio has caught up (or ``drain_s``), echoing marks."""
        deadline = self._clock() + self._plan.drain_s
        result = self._result
        while not self._ws.closed and self._clock() < deadline:
            if result.audio_s_received >= result.audio_s_sent:
                break
            self._echo_due_marks(self._clock())
            await asyncio.sleep(FRAME_S)

    async def hang_up(self, by: EndedBy) -> None:
        """Ends the call like the carrier does: ``stop``, then close the socket."""
        if self._closing or self._ws.closed:
            return
        self._closing = True
        self._result.ended_by = by
        self._send(self._wire.stop())
        await self._ws.close()

    def _send(self, message: bytes) -> bool:
        """Writes one message; a refusal while the call is live is the gateway not reading (one error)."""
        if self._ws.send_text(message):
            return True
        self._refused()
        return False

    def _refused(self) -> None:
        ws = self._ws
        if not (ws.closed or self._closing or self._send_refused):
            self._send_refused = True
            self._result.add_error("gateway stopped reading the media socket: messages dropped")

    # -- sending (driven by the pacer) ------------------------------------------------------------

    def on_due(self, due: float) -> float | None:
        ws = self._ws
        if self._closing or ws.closed:
            self._sending_done.set()
            return None
        result = self._result
        now = self._clock()
        self._lateness.record(due, (now - due) * 1000.0)
        n = self._n
        if n >= self._dtmf_frame:
            self._send_dtmf(n)
        i = self._frame_i
        payload, onset = self._frames[i]
        i += 1
        self._frame_i = i if i < len(self._frames) else self._frames_wrap
        if onset and self._detector is not None:
            self._sent_bursts.append(now)
            result.bursts_sent += 1
        message = self._wire.media(payload)
        if self._reorder_every:
            sent = self._send_reordered(n, message, onset)
        elif ws.send_text(message):
            sent = True
        else:
            sent = False
            self._refused()
        if sent:
            result.frames_sent += 1
            result.bytes_sent += self._frame_bytes
            result.audio_s_sent += FRAME_S
        if now >= self._playout.mark_due_at:
            self._echo_due_marks(now)
        n += 1
        self._n = n
        if ws.closed or n >= self._total_frames:
            self._sending_done.set()
            return None
        return self._t0 + n * FRAME_S

    def _send_dtmf(self, n: int) -> None:
        """Sends the digits due by frame ``n``; ``_dtmf_frame`` becomes the next one's frame."""
        dtmf = self._dtmf
        while self._dtmf_next < len(dtmf) and dtmf[self._dtmf_next][0] <= n * FRAME_S:
            if self._send(self._wire.dtmf(dtmf[self._dtmf_next][1])):
                self._result.dtmf_sent += 1
            self._dtmf_next += 1
        self._dtmf_frame = n + 1 if self._dtmf_next < len(dtmf) else _NEVER

    def _send_reordered(self, n: int, message: bytes, onset: bool) -> bool:
        """Every ``reorder_every``-th frame goes out after its successor (never a burst onset, never last)."""
        if self._held is not None:
            sent = self._send(message)
            self._send(self._held)
            self._held = None
            return sent
        last = n + 1 >= self._total_frames
        if (n + 1) % self._reorder_every or onset or last:
            return self._send(message)
        self._held = message
        return True

    def _echo_due_marks(self, now: float) -> None:
        for name in self._playout.due_marks(now):
            self._send(self._wire.mark(name))
            self._result.marks_echoed_played += 1

    # -- receiving ----------------------------------------------------------------------------------

    def _on_message(self, opcode: int, payload: bytes) -> None:
        """Called by the socket for each message as it is parsed: no task, no queue."""
        if opcode == OP_TEXT:
            # A media message this stream already accepted, byte for byte (most of an echo):
            # exactly what parse() would return for it, without the call.
            known = self._known_media.get(payload)
            if known is not None:
                self._on_media(self._clock(), known.audio)
                return
        else:
            self._violation("binary frame (Twilio warning 31950: use JSON text frames)")
            return
        now = self._clock()
        try:
            message = self._wire.parse(payload)
        except ProtocolViolation as exc:
            self._violation(str(exc))
            reply = self._wire.error("100003", "malformed_frame", str(exc))
            if reply is not None:
                self._send(reply)
            return
        if type(message) is MediaOut:
            self._on_media(now, message.audio)
        elif type(message) is MarkOut:
            self._result.marks_received += 1
            if self._playout.enqueue_mark(now, message.name):
                self._send(self._wire.mark(message.name))
                self._result.marks_echoed_played += 1
        else:
            self._result.clears_received += 1
            outcome = self._playout.clear(now)
            self._result.bytes_cleared += outcome.dropped_bytes
            for name in outcome.marks:
                self._send(self._wire.mark(name))
            self._result.marks_echoed_cleared += len(outcome.marks)

    def _on_tapped_message(self, opcode: int, payload: bytes) -> None:
        if self._tap is not None and opcode == OP_TEXT:
            self._tap.message(self._clock(), payload)
        self._on_message(opcode, payload)

    def _on_closed(self) -> None:
        """Bookkeeping once the socket is closed, whoever closed it."""
        ws = self._ws
        result = self._result
        if ws.protocol_error is not None:
            self._violation(f"WebSocket framing: {ws.protocol_error.reason}")
        if self._tap is not None and ws.closed_at is not None:
            self._tap.closed(ws.closed_at)
        if not self._closing and ws.closed:
            self._closing = True
            result.ended_by = "error" if ws.protocol_error is not None else "gateway"
            if ws.exception is not None:
                result.add_error(f"media socket failed: {ws.exception}")

    def _on_media(self, now: float, audio: bytes) -> None:
        result = self._result
        size = len(audio)
        result.frames_received += 1
        result.bytes_received += size
        duration = size / self._out_bps
        result.audio_s_received += duration
        if self._last_arrival is not None:
            d = abs((now - self._last_arrival) - self._last_duration)
            result.jitter_ms += (d * 1000.0 - result.jitter_ms) * _JITTER_GAIN
        self._last_arrival, self._last_duration = now, duration
        play_start = self._playout.enqueue_audio(now, audio)
        if self._received is not None:
            self._received += audio
        detector = self._detector
        if detector is None:
            return
        silent = audio == self._silent_frame
        pending = self._detect_pending
        if silent and not pending and detector.skip_silence(self._silent_samples):
            return
        # Sound is demodulated in batches: a burst's frames and the silence that ends it in one
        # feed, not one each (a feed's cost is mostly per numpy call, not per sample). Onsets are
        # placed by sample position and chunk arrival, so deferring them changes no figure.
        self._chunks.append(_Chunk(detector.position + self._detect_pending_samples, now, play_start))
        pending.append(audio)
        self._detect_pending_samples += size // self._bytes_per_sample
        if silent or len(pending) >= _DETECT_BATCH:
            self._detect()

    def _detect(self) -> None:
        """Feeds the frames waiting for the tone detector; matches the onsets it finds."""
        pending = self._detect_pending
        if self._detector is None or not pending:
            return
        samples = decode_to_float(b"".join(pending), self._out_encoding)
        pending.clear()
        self._detect_pending_samples = 0
        for onset in self._detector.feed(samples):
            self._match_onset(onset)

    def _match_onset(self, onset: float) -> None:
        """Pairs a returned burst onset with the oldest unanswered sent burst (within the match window)."""
        chunk = self._chunks[0]
        # A codec change (e.g. A-law in, μ-law back) can move the estimated onset a fraction of a
        # millisecond before the burst's first sample: that still belongs to the burst's chunk.
        onset_with_slack = onset + self._out_rate * ONSET_SLACK_S
        for candidate in reversed(self._chunks):
            if candidate.position <= onset_with_slack:
                chunk = candidate
                break
        result = self._result
        sent = self._sent_bursts
        while sent and sent[0] < chunk.arrival - self._match_window:
            sent.popleft()
            result.bursts_lost += 1
        if not sent or sent[0] > chunk.arrival:
            result.spurious_onsets += 1
            return
        sent_at = sent.popleft()
        played_at = chunk.play_start + (onset - chunk.position) / self._out_rate
        result.bursts_answered += 1
        self._latency.record(chunk.arrival, (chunk.arrival - sent_at) * 1000.0)
        self._playout_latency.record(chunk.arrival, (played_at - sent_at) * 1000.0)

    def _violation(self, what: str) -> None:
        result = self._result
        result.protocol_violations += 1
        if result.protocol_violations == 1:
            log.warning("gateway protocol violation on %s: %s", result.call_sid, what)
        result.add_error(f"protocol violation: {what}")

    def _finish(self) -> None:
        self._detect()
        result = self._result
        result.bursts_lost += len(self._sent_bursts)
        self._sent_bursts.clear()
        if self._received is not None:
            result.received_audio = bytes(self._received)
        if self._playout.played is not None:
            result.played_audio = bytes(self._playout.played)


async def _first(*aws: object) -> None:
    """Waits until the first of the awaitables completes; cancels the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]  # type: ignore[call-overload]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
