"""Carrier media WebSockets (``/twilio/media``, ``/telnyx/media``): the carrier reader loop.

The handler's own task reads the carrier socket (``MediaSocket``) for the whole call; the sans-I/O
stream codec turns each text frame into one typed event (one JSON parse), and the call session
takes it from there. Bad input closes the socket with the codec's specific close code (or RFC
6455's, for broken framing) and one log line.
When the call ends for any reason the ``calls`` row is closed and billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Final

from aiohttp import web

from gateway.app import CTX_KEY, GatewayContext, LiveCall, PendingSocket
from gateway.carriers.base import (
    CLOSE_BAD_TOKEN,
    CLOSE_BINARY_FRAME,
    CLOSE_DUPLICATE_SOCKET,
    CLOSE_FLOOD,
    CarrierError,
    Dtmf,
    MarkEcho,
    Media,
    ProtocolViolation,
    Start,
    Stop,
)
from gateway.carriers.telnyx import TelnyxStream
from gateway.carriers.telnyx_rest import hangup as telnyx_hangup
from gateway.carriers.twilio import TwilioStream
from gateway.media_socket import MediaSocket
from gateway.security import TokenError, verify_stream_token
from gateway.session import CallSession
from providers.base import MULAW_8000, Audio, AudioFormat
from providers.ws_frames import OP_TEXT
from storage.billing import BILLING_FAILED_EVENT, BillableCall, bill_call
from storage.calls import claim_call, finish_call_stmt
from storage.ids import now_s

log = logging.getLogger(__name__)
_monotonic: Final = time.monotonic  # a C static under mypyc: read on every caller frame


class WsCarrierLink:
    """The session's view of the carrier leg: outbound messages and hang-up."""

    out_format: AudioFormat = MULAW_8000  # Twilio always; Telnyx by our TeXML's bidirectionalCodec

    def __init__(
        self, ctx: GatewayContext, sock: MediaSocket, codec: TwilioStream | TelnyxStream, carrier: str
    ) -> None:
        self.ctx = ctx
        self.sock = sock
        self.codec = codec  # the concrete classes, not ``Any``: mypyc then calls them natively per frame
        self.carrier = carrier
        self.call_control_id: str | None = None

    # A send to a carrier that is leaving (or not reading) is dropped by the socket: that is the
    # caller's side, not a provider fault; the reader loop sees the close and ends the call.
    def send_media(self, audio: Audio, mark: str | None = None) -> None:
        codec = self.codec
        then = None if mark is None else codec.mark_message(mark)
        if not self.sock.send_text(codec.media_message(audio), then):
            self.ctx.stats.frames.dropped += 1

    def send_mark(self, name: str) -> None:
        self.sock.send_text(self.codec.mark_message(name))

    def send_clear(self) -> None:
        self.sock.send_text(self.codec.clear_message())

    async def hangup(self, reason: str) -> None:
        """End the carrier leg. Twilio ends the call when we close the socket; Telnyx needs its REST
        hang-up, after which Telnyx itself stops the stream.

        The Telnyx hang-up runs in the background: while answering it the carrier tears the stream
        down, and the session must not wait on that (our reader is what answers the close).
        """
        s = self.ctx.settings
        if self.carrier == "telnyx" and self.call_control_id and s.telnyx_api_key:
            self.ctx.spawn(
                self._telnyx_hangup(s.telnyx_api_base, s.telnyx_api_key, self.call_control_id, reason)
            )
            return
        await self._close(reason)

    async def _telnyx_hangup(self, base: str, key: str, call_control_id: str, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(telnyx_hangup(self.ctx.http, base, key, call_control_id), 5.0)
        await self._close(reason)  # in case the REST call failed: never leave the socket open

    async def _close(self, reason: str) -> None:
        # Only the reason's category goes on the wire: provider error text stays in our rows.
        await self.sock.close(1000, reason.split(":")[0])


BACKLOG_PAUSE: Final = 200  # messages waiting behind a slow step (start, a provider send): stop reading


class _CarrierStream:
    """One carrier media stream. Messages are handled in arrival order: inline, as the socket
    parses them, while nothing is waiting (so a media frame for an in-process provider costs no
    task switch), otherwise by ``run()`` on the handler's task, behind what is waiting."""

    def __init__(self, ctx: GatewayContext, sock: MediaSocket, carrier: str) -> None:
        self.ctx = ctx
        self.sock = sock
        self.carrier = carrier
        self.codec: TwilioStream | TelnyxStream = TwilioStream() if carrier == "twilio" else TelnyxStream()
        self.link = WsCarrierLink(ctx, sock, self.codec, carrier)
        self.session: CallSession | None = None
        self.call_id: str | None = None
        self.done = False  # stop, violation or refused start: later messages are not handled
        self._backlog: deque[tuple[int, bytes] | Awaitable[None]] = deque()
        self._idle = False  # run() is parked with an empty backlog: a message may be handled inline
        self._wakeup: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._limit = ctx.settings.max_messages_per_s
        self._window_start = time.monotonic()
        self._count = 0

    async def close(self, code: int, reason: str) -> None:
        await self.sock.close(code, reason)

    async def run(self) -> None:
        backlog = self._backlog
        loop = asyncio.get_running_loop()
        self.sock.start(self._on_message, self._wake)
        try:
            while True:
                if backlog:
                    item = backlog.popleft()
                    if self._reading_paused and len(backlog) <= BACKLOG_PAUSE // 2:
                        self._reading_paused = False
                        self.sock.resume_reading()
                    if type(item) is tuple:
                        if self.done:
                            continue
                        step = self._process(*item)
                        if step is None:
                            continue
                        await step
                    else:
                        await item  # type: ignore[misc]
                    continue
                if self.done or self.sock.closed:
                    break
                self._idle = True
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                    self._idle = False
        finally:
            for item in backlog:  # cancelled with steps still waiting: never leave a coroutine unawaited
                if asyncio.iscoroutine(item):
                    item.close()
            backlog.clear()
        error = self.sock.protocol_error
        if error is not None:  # broken framing: the socket already closed with RFC 6455's code
            detail = f"websocket {error.reason}"
            _violation(self.ctx, self.call_id, self.carrier, "websocket", detail, self.session)

    # ------------------------------------------------------------------ called by the socket
    def _on_message(self, opcode: int, payload: bytes) -> None:
        if self.done:
            return
        backlog = self._backlog
        if self._idle and not backlog:
            step = self._process(opcode, payload)
            if step is None:
                return
            backlog.append(step)
        else:
            backlog.append((opcode, payload))
            if len(backlog) >= BACKLOG_PAUSE and not self._reading_paused:
                self._reading_paused = True
                self.sock.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ one message
    def _process(self, opcode: int, payload: bytes) -> Awaitable[None] | None:
        """Handle one message; returns what must still be awaited (in order), if anything."""
        self._count += 1
        if self._count > self._limit:
            now = time.monotonic()
            if now - self._window_start < 1.0:
                detail = f"more than {self._limit} messages/s"
                return self._refuse("flood", detail, CLOSE_FLOOD, "message flood")
            self._window_start, self._count = now, 0
        if opcode != OP_TEXT:
            reason = "binary frames are not accepted"
            return self._refuse("binary_frame", reason, CLOSE_BINARY_FRAME, reason)
        try:
            event = self.codec.receive(payload)
        except ProtocolViolation as v:
            return self._refuse(v.reason, v.reason, v.close_code, v.reason)
        if type(event) is Media:  # by far the most frequent: checked first
            session = self.session
            if session is None:
                return None
            session.last_carrier_msg = _monotonic()
            return session.on_media(event.audio)
        if type(event) is MarkEcho:  # one per MARK_EVERY_MS of agent audio: no coroutine
            session = self.session
            return None if session is None else session.on_mark_echo(event.name)
        return self._on_event(event)

    def _refuse(self, key: str, detail: str, code: int, reason: str) -> Awaitable[None]:
        self.done = True
        _violation(self.ctx, self.call_id, self.carrier, key, detail, self.session)
        return self.close(code, reason)

    async def _on_event(self, event: object) -> None:
        ctx, session = self.ctx, self.session
        if isinstance(event, Start):
            ctx.pending.pop(id(self.sock), None)
            self.session, self.call_id = await _start(ctx, event, self.carrier, self.link, self.close)
            if self.session is None or self.call_id is None:
                self.done = True
                return
            ctx.call_started(self.call_id, LiveCall(self.session, self.close))
        elif isinstance(event, Dtmf):
            if session is not None:
                await session.on_dtmf(event.digit)
        elif isinstance(event, Stop):
            if session is not None:
                session.carrier_gone("caller_hangup")
            self.done = True
        elif isinstance(event, CarrierError):
            log.warning("%s error frame on call %s: %s", self.carrier, self.call_id, event)
            if self.call_id is not None:
                data = {"code": event.code, "title": event.title, "detail": event.detail}
                ctx.recorder.event(self.call_id, "carrier_error", data)


async def _handle(request: web.Request, carrier: str) -> web.StreamResponse:
    ctx = request.app[CTX_KEY]
    sock, response = await MediaSocket.accept(request, max_message_bytes=ctx.settings.max_frame_bytes)
    stream = _CarrierStream(ctx, sock, carrier)
    key = id(sock)
    ctx.pending[key] = PendingSocket(time.monotonic(), stream.close)
    try:
        await stream.run()
    finally:
        ctx.pending.pop(key, None)
        if stream.session is not None and stream.call_id is not None:
            # Shielded: aiohttp may cancel this handler when the socket drops, and the call row
            # must still be closed and billed.
            await asyncio.shield(_close_call(ctx, sock, stream.session, stream.call_id))
    return response


async def _close_call(ctx: GatewayContext, sock: MediaSocket, session: CallSession, call_id: str) -> None:
    try:
        session.carrier_gone("carrier_closed")
        await session.wait_closed()
        await sock.close()
        await _finalize(ctx, session, call_id)
    except Exception:
        log.exception("call %s: closing the call failed", call_id)
    finally:
        ctx.call_ended(call_id)


def _violation(
    ctx: GatewayContext,
    call_id: str | None,
    carrier: str,
    key: str,
    detail: str,
    session: CallSession | None = None,
) -> None:
    ctx.stats.protocol_errors[key.split(":")[0][:40]] += 1
    log.warning("%s media socket closed (call %s): %s", carrier, call_id or "-", detail)
    if call_id is not None:
        ctx.recorder.event(call_id, "error", {"source": "carrier", "reason": detail})
        if session is not None:
            session.carrier_gone("carrier_protocol_error")


async def _start(
    ctx: GatewayContext, start: Start, carrier: str, link: WsCarrierLink, close: Any
) -> tuple[CallSession | None, str | None]:
    params = start.custom_parameters
    call_id = params.get("call_id", "")
    try:
        verify_stream_token(ctx.token_secret, params.get("token", ""), call_id, carrier, time.time())
    except TokenError as exc:
        ctx.stats.protocol_errors["bad_token"] += 1
        log.warning("%s media socket refused: stream token %s (call %s)", carrier, exc, call_id or "-")
        await close(CLOSE_BAD_TOKEN, f"stream token {exc}")
        return None, None
    try:
        claimed = call_id not in ctx.live and await claim_call(ctx.db, call_id)
    except Exception:
        log.exception("call %s: the stream claim failed", call_id)
        await close(1011, "internal error")
        return None, None
    if not claimed:
        ctx.stats.protocol_errors["duplicate_socket"] += 1
        log.warning("%s media socket refused: call %s already has a media stream", carrier, call_id)
        await close(CLOSE_DUPLICATE_SOCKET, "call already has a media stream")
        return None, None
    try:
        return await _bridge(ctx, start, carrier, link, call_id)
    except Exception:
        log.exception("call %s: could not be bridged after its stream was claimed", call_id)
        now = now_s()
        ctx.recorder.statement(finish_call_stmt(call_id, "failed", 0, now, "none", None, None))
        ctx.recorder.event(call_id, "error", {"source": "gateway", "reason": "bridge_failed"})
        await close(1011, "internal error")
        return None, None


async def _bridge(
    ctx: GatewayContext, start: Start, carrier: str, link: WsCarrierLink, call_id: str
) -> tuple[CallSession | None, str | None]:
    setup = await ctx.selector.lookup(call_id)
    if setup is None:
        raise LookupError("call setup missing")
    link.call_control_id = start.call_ref if carrier == "telnyx" else None
    pre = ctx.selector.take_preconnect(call_id)
    if pre is not None:
        plan, preconnected = pre
    else:
        plan, preconnected = await ctx.selector.plan(setup), None
    session = CallSession(
        call_id=call_id,
        carrier=link,
        carrier_in_format=start.media_format,
        attempts=plan.attempts,
        events=ctx.recorder,
        stats=ctx.stats,
        connect_deadline_s=ctx.settings.provider_connect_deadline_s,
        attempt_timeout_s=ctx.settings.provider_attempt_timeout_s,
        fallback_enabled=plan.fallback_enabled,
        silence_failover_s=ctx.settings.provider_silence_failover_s,
        observer=ctx.selector.observer,
        preconnected=preconnected,
    )
    ctx.recorder.event(
        call_id,
        "answered",
        {
            "carrier": carrier,
            "stream_id": start.stream_id,
            "media_format": str(start.media_format),
            "preconnected": preconnected is not None,
        },
    )
    session.start()
    return session, call_id


async def _finalize(ctx: GatewayContext, session: CallSession, call_id: str) -> None:
    """Close the call row, bill it, record the end — after the audio is gone."""
    outcome = session.outcome
    if outcome is None:
        return
    setup = await ctx.selector.lookup(call_id)
    ended_at = int(outcome.ended_at)
    cost: float | None = None
    if setup is not None:
        for attempt in range(3):
            try:
                result = await bill_call(
                    ctx.db,
                    BillableCall(
                        call_id=call_id,
                        workspace_id=setup.workspace_id,
                        provider=outcome.provider_used,
                        started_at=ended_at - outcome.duration_s,
                        ended_at=ended_at,
                        duration_seconds=outcome.duration_s,
                        usage=outcome.usage,
                    ),
                )
                cost = result.cost_total
                break
            except Exception:
                log.exception("call %s: billing failed (attempt %d)", call_id, attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            # cost_total stays NULL and the event says so: the next start (or `voicegw billing
            # bill-recovered`) bills it from the `ended` event (storage.billing.bill_failed_calls).
            ctx.recorder.event(call_id, BILLING_FAILED_EVENT, {"attempts": 3})
    ctx.recorder.statement(
        finish_call_stmt(
            call_id,
            outcome.status,
            outcome.duration_s,
            ended_at,
            outcome.provider_used,
            outcome.transcript or None,
            cost,
        )
    )
    ctx.recorder.event(
        call_id,
        "ended",
        {
            "status": outcome.status,
            "reason": outcome.reason,
            "provider": outcome.provider_used,
            "providers_tried": session.providers_tried,
            "duration_seconds": outcome.duration_s,
            "usage": outcome.usage,
            "cost_total": cost,
        },
    )
    ctx.stats.calls_by_outcome[outcome.status] += 1
    ctx.selector.forget(call_id)


async def twilio_media(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "twilio")


async def telnyx_media(request: web.Request) -> web.StreamResponse:
    return await _handle(request, "telnyx")


def routes() -> list[web.RouteDef]:
    return [web.get("/twilio/media", twilio_media), web.get("/telnyx/media", telnyx_media)]
