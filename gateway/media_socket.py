"""The carrier's media WebSocket: accepted on aiohttp's request, then framed by ``ws_frames``.

aiohttp still owns the connection: it parsed the upgrade request, it keeps the connection in its
registry, and it closes it after the handler returns. After our ``101`` it hands every later byte
to ``MediaSocket.feed_data`` (its payload-parser hook, the one its own ``WebSocketResponse``
uses), which parses in place and passes each whole message to the handler's ``on_message``
callback at once: a media frame can be answered before the loop runs anything else. Sends write
the frame straight to the transport: no task, no future, no lock per frame.

Bounded on the way out: a carrier that stops reading gets messages dropped (counted) once
``max_unsent_bytes`` wait in the send buffer, because audio later than real time is noise. On the
way in the handler bounds its own backlog with ``pause_reading``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web
from websockets.utils import accept_key

from gateway.tracebacks import drop_tracebacks
from providers.ws_frames import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameParser,
    close_payload,
    encode_frame,
    parse_close,
)

CLOSE_WAIT_S = 1.0  # how long our close waits for the carrier's close frame before dropping TCP


OnMessage = Callable[[int, bytes], None]


class MediaSocket:
    """One accepted WebSocket. Each data message goes to ``on_message(opcode, payload)`` as it is
    parsed; ``on_closed()`` runs once no more will come, with ``close_code`` and ``protocol_error``
    saying why."""

    def __init__(
        self, transport: asyncio.Transport, *, max_message_bytes: int, max_unsent_bytes: int
    ) -> None:
        self._transport = transport
        self._parser = FrameParser(from_client=True, max_message_bytes=max_message_bytes)
        self._max_unsent = max_unsent_bytes
        self._early: list[tuple[int, bytes]] | None = []  # messages before ``start`` (kept in order)
        self._on_message: OnMessage = self._keep_early
        self._on_closed: Callable[[], None] = _nothing
        self._close_sent = False
        self._close_received: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False  # no more messages will be read (close frame, error or dropped TCP)
        self.close_code: int | None = None
        self.protocol_error: FrameError | None = None

    @classmethod
    async def accept(
        cls,
        request: web.Request,
        *,
        max_message_bytes: int,
        max_unsent_bytes: int = 256 * 1024,
    ) -> tuple[MediaSocket, web.StreamResponse]:
        """Answer the upgrade; raises ``HTTPBadRequest`` for a request that is not a valid one.

        The returned response must be what the handler returns, so aiohttp finishes the exchange.
        """
        if not web.WebSocketResponse().can_prepare(request).ok:  # aiohttp's own header checks
            raise web.HTTPBadRequest(text="expected a WebSocket upgrade (RFC 6455, version 13)")
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the carrier left during the upgrade")
        response = web.StreamResponse(
            status=101,
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Accept": accept_key(request.headers["Sec-WebSocket-Key"]),
            },
        )
        await response.prepare(request)
        sock = cls(transport, max_message_bytes=max_message_bytes, max_unsent_bytes=max_unsent_bytes)
        # From here aiohttp passes every byte of the connection to feed_data (bytes that came
        # early were kept by aiohttp and are fed now), and closes the connection after the handler.
        request.protocol.set_parser(sock)  # type: ignore[arg-type]  # duck-typed like its WebSocketReader
        request.protocol.keep_alive(False)
        return sock, response

    def start(self, on_message: OnMessage, on_closed: Callable[[], None]) -> None:
        """Begin delivering messages (first any that arrived before this call)."""
        early, self._early = self._early or [], None
        self._on_message, self._on_closed = on_message, on_closed
        for opcode, payload in early:
            on_message(opcode, payload)
        if self.closed:
            self._release()
            on_closed()

    def _keep_early(self, opcode: int, payload: bytes) -> None:
        assert self._early is not None
        self._early.append((opcode, payload))

    # ------------------------------------------------------------------ aiohttp's parser hook
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """Bytes from the connection. Returns ``(eof, tail)`` as aiohttp's hook expects; eof stops
        aiohttp from passing more (after a close frame or an error)."""
        if self._close_received.done():
            return True, b""
        try:
            messages = self._parser.feed(data)
        except FrameError as exc:
            self._deliver(exc.messages)  # what came complete before the broken frame is not lost
            drop_tracebacks(exc)  # its frames hold this socket
            self.protocol_error = exc
            self._send_close(exc.close_code, exc.reason)
            self._set_closed(exc.close_code)
            self._close_received.set_result(None)  # a broken peer's close is not waited for
            return True, b""
        return (True, b"") if self._deliver(messages) else (False, b"")

    def _deliver(self, messages: list[tuple[int, bytes]]) -> bool:
        """Hand data messages to the handler and answer control frames; True once the peer's
        close frame came. After our own close only that frame matters: reading goes on for it,
        so ``close()`` returns as soon as the carrier answers."""
        for opcode, payload in messages:
            if opcode <= OP_BINARY:  # a data message: text or binary
                if not self.closed:
                    self._on_message(opcode, payload)
            elif opcode == OP_PING:
                if not self._close_sent:
                    self._write(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                try:
                    code, _ = parse_close(payload)
                except FrameError as exc:
                    drop_tracebacks(exc)
                    self.protocol_error = exc
                    code = exc.close_code
                self._send_close(CLOSE_NORMAL if code == CLOSE_NO_STATUS else code)  # the reply echoes it
                self._set_closed(code)
                self._close_received.set_result(None)
                return True
        return False

    def feed_eof(self) -> None:
        """The connection is gone (aiohttp's ``connection_lost``)."""
        self._set_closed(CLOSE_ABNORMAL)
        if not self._close_received.done():
            self._close_received.set_result(None)

    # ------------------------------------------------------------------ the handler's side
    def pause_reading(self) -> None:
        """Stop taking bytes from the socket (TCP then pushes back on the carrier)."""
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def send_text(self, text: bytes, then: bytes | None = None) -> bool:
        """Queue one text message (its UTF-8 bytes) for the carrier, and ``then``, a second one,
        in the same write; False when it cannot be sent now (closing, or ``max_unsent_bytes``
        already wait because the carrier is not reading)."""
        frame = encode_frame(OP_TEXT, text)
        if then is not None:
            frame += encode_frame(OP_TEXT, then)
        return self._send_frame(frame)

    def send_binary(self, data: bytes) -> bool:
        return self._send_frame(encode_frame(OP_BINARY, data))

    def _send_frame(self, frames: bytes) -> bool:
        transport = self._transport
        if self._close_sent or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self._max_unsent:
            return False
        transport.write(frames)
        return True

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send our close frame and wait (briefly) for the carrier's; aiohttp drops TCP afterwards."""
        self._send_close(code, reason)
        self._set_closed(self.close_code or code)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._close_received), CLOSE_WAIT_S)

    # ------------------------------------------------------------------ internals
    def _send_close(self, code: int, reason: str = "") -> None:
        if not self._close_sent:
            self._close_sent = True
            self._write(encode_frame(OP_CLOSE, close_payload(code, reason)))

    def _write(self, frame: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(frame)

    def _set_closed(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            on_closed = self._on_closed
            self._release()
            on_closed()

    def _release(self) -> None:
        """A closed socket delivers nothing more, so it lets go of the handler's callbacks: they
        are bound methods of the handler, which holds this socket, and without this cycle a
        finished call is freed at once by reference counting, not by a full garbage collection
        that stops every live call."""
        self._on_message, self._on_closed = _ignore, _nothing


def _ignore(opcode: int, payload: bytes) -> None:
    """``on_message`` once closed: nothing is delivered any more."""


def _nothing() -> None:
    """``on_closed`` before ``start`` (which reports the close itself) and once it was reported."""
