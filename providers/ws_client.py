"""The provider WebSocket client: an asyncio protocol on ``ws_frames``, messages by callback.

Why not aiohttp's client WebSocket: a relayed call is 50 provider messages a second each way,
and aiohttp's ``receive()`` costs a future, a ``WSMessage`` and a task switch per message, and
its sends are coroutines, so every caller frame to a provider cost a switch to another task
(measured in ``docs/architecture.md``, "Provider media transport"). Here each parsed message goes
to ``on_message`` as ``data_received`` parses it and sends are plain ``transport.write`` calls,
the same shape as the carrier side (``gateway/media_socket.py``).

The upgrade request and response are h11's (sans-I/O HTTP/1.1, its ``trailing_data`` hands back
the first frames when they share a TCP segment with the ``101``). Until ``start`` the socket
keeps messages for ``receive()``, which adapters use for their handshake replies.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Final, cast
from urllib.parse import urlsplit

import h11
from websockets.utils import accept_key

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

CLOSE_TIMEOUT_S = 1.0  # close() must be prompt even when the provider never answers the close frame
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_UNSENT_BYTES: Final = 256 * 1024  # audio waiting beyond this is dropped: the provider is not reading
EARLY_PAUSE: Final = 256  # messages kept before ``start``; reading pauses beyond it

OnMessage = Callable[[int, bytes], None]

_tls_context: ssl.SSLContext | None = None


def _default_tls() -> ssl.SSLContext:
    """The system's CA store with hostname checks, built once (building one costs milliseconds)."""
    global _tls_context
    if _tls_context is None:
        _tls_context = ssl.create_default_context()
    return _tls_context


class HandshakeError(Exception):
    """The server answered the upgrade with something other than a valid ``101``; ``status`` is
    its HTTP status (101 when the status was right but the headers were not)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"WebSocket upgrade refused: HTTP {status}: {detail}")
        self.status = status


class ProviderSocket(asyncio.Protocol):
    """One client WebSocket. Data messages go to ``on_message(opcode, payload)`` (after ``start``)
    or to ``receive()`` (before); ``on_closed()`` runs once no more will come, with
    ``close_code``/``close_reason`` saying why."""

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._handshake: h11.Connection | None = h11.Connection(h11.CLIENT)
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._opened: asyncio.Future[None] = self._loop.create_future()
        self._parser = FrameParser(from_client=False, max_message_bytes=max_message_bytes)
        self._early: collections.deque[tuple[int, bytes]] | None = collections.deque()
        self._early_waiter: asyncio.Future[None] | None = None
        self._on_message: OnMessage | None = None
        self._on_closed: Callable[[], None] | None = None
        self._close_sent = False
        self._close_received: asyncio.Future[None] = self._loop.create_future()
        self._paused = False
        # Kept by the transport's callbacks and our own closes, so a send asks the transport nothing
        # (each question is a Python method call: two per audio frame cost ~1,000 instructions).
        self._tcp_closing = False  # close()/abort() called, or the connection is lost
        self._writes_paused = False  # MAX_UNSENT_BYTES wait (pause_writing), until drained to a quarter
        self.closed = False  # no more messages will be read (close frame, error or dropped TCP)
        self.close_code: int | None = None
        self.close_reason = ""

    # ------------------------------------------------------------------ opening
    @classmethod
    async def connect(
        cls,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        tls: ssl.SSLContext | None = None,
    ) -> ProviderSocket:
        """TCP (+ TLS for ``wss://``) and the upgrade. Raises ``HandshakeError`` for a refused
        upgrade and ``OSError`` when the server cannot be reached; cancelling aborts the socket."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        host = parts.hostname
        authority = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            authority += f":{parts.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        loop = asyncio.get_running_loop()
        sock = cls(max_message_bytes=max_message_bytes)
        transport, _ = await loop.create_connection(
            lambda: sock,
            host,
            port,
            ssl=(tls or _default_tls()) if secure else None,
            server_hostname=host if secure else None,
        )
        sock._transport = transport  # uvloop may return before connection_made has run
        try:
            sock._send_upgrade(target, authority, headers or {})
            await sock._opened
        except BaseException:
            sock._tcp_closing = True
            transport.abort()
            raise
        return sock

    def _send_upgrade(self, target: str, authority: str, headers: Mapping[str, str]) -> None:
        assert self._handshake is not None and self._transport is not None
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                ("Host", authority),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", self._key),
                ("Sec-WebSocket-Version", "13"),
                *headers.items(),
            ],
        )
        self._transport.write(self._handshake.send(request) + self._handshake.send(h11.EndOfMessage()))

    def _handshake_data(self, data: bytes) -> None:
        """Bytes before the ``101`` completed: feed h11; on the ``101``, frames may follow at once."""
        conn = self._handshake
        assert conn is not None
        try:
            conn.receive_data(data)
            event = conn.next_event()
            while isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                event = conn.next_event()  # e.g. 100 Continue
        except h11.RemoteProtocolError as exc:
            self._refuse(HandshakeError(502, f"malformed HTTP answer: {exc}"))
            return
        if event is h11.NEED_DATA:
            return
        if isinstance(event, h11.ConnectionClosed):
            self._refuse(ConnectionResetError("the server closed the connection during the upgrade"))
            return
        if not isinstance(event, h11.InformationalResponse | h11.Response):
            self._refuse(HandshakeError(502, f"unexpected {type(event).__name__}"))
            return
        if event.status_code != 101:
            self._refuse(HandshakeError(event.status_code, event.reason.decode("latin-1")))
            return
        answer = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers}
        if answer.get("upgrade", "").lower() != "websocket":
            self._refuse(HandshakeError(101, "missing 'Upgrade: websocket'"))
            return
        if answer.get("sec-websocket-accept") != accept_key(self._key):
            self._refuse(HandshakeError(101, "wrong Sec-WebSocket-Accept"))
            return
        if answer.get("sec-websocket-extensions"):
            self._refuse(HandshakeError(101, "the server chose an extension we never offered"))
            return
        trailing, _ = conn.trailing_data
        self._handshake = None
        self._opened.set_result(None)
        if trailing:
            self._frames_data(trailing)

    def _refuse(self, exc: BaseException) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc)
        if self._transport is not None:
            self._tcp_closing = True
            self._transport.abort()

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio subclass
        self._transport.set_write_buffer_limits(high=MAX_UNSENT_BYTES)
        raw = transport.get_extra_info("socket")
        if raw is not None:
            with contextlib.suppress(OSError):  # not every transport is TCP (tests may use others)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._handshake_data(data)
        else:
            self._frames_data(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost reports it

    def pause_writing(self) -> None:
        self._writes_paused = True

    def resume_writing(self) -> None:
        self._writes_paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._tcp_closing = True
        if not self._opened.done():
            self._opened.set_exception(
                exc or ConnectionResetError("the server closed the connection during the upgrade")
            )
        if not self._close_received.done():
            self._close_received.set_result(None)
        reason = f"connection lost: {exc!r}" if exc is not None else "connection closed without a close frame"
        self._set_closed(CLOSE_ABNORMAL, reason)

    # ------------------------------------------------------------------ frames in
    def _frames_data(self, data: bytes) -> None:
        if self._close_received.done():
            return
        try:
            messages = self._parser.feed(data)
        except FrameError as exc:
            self._deliver(exc.messages)  # what came complete before the broken frame is not lost
            self._send_close(exc.close_code, exc.reason)
            self._close_received.set_result(None)  # a broken peer's close is not waited for
            self._set_closed(exc.close_code, f"protocol error: {exc.reason}")
            self._drop_tcp()
            return
        self._deliver(messages)

    def _deliver(self, messages: list[tuple[int, bytes]]) -> None:
        for opcode, payload in messages:
            if opcode <= OP_BINARY:  # a data message: text or binary
                if self.closed:
                    continue
                if self._on_message is not None:
                    self._on_message(opcode, payload)
                else:
                    self._keep_early(opcode, payload)
            elif opcode == OP_PING:
                if not self._close_sent:
                    self._write(encode_frame(OP_PONG, payload, mask=True))
            elif opcode == OP_CLOSE:
                try:
                    code, reason = parse_close(payload)
                except FrameError as exc:
                    code, reason = exc.close_code, f"protocol error: {exc.reason}"
                self._send_close(CLOSE_NORMAL if code == CLOSE_NO_STATUS else code)  # the reply echoes it
                self._close_received.set_result(None)
                self._set_closed(code, reason)
                self._drop_tcp()
                return

    def _keep_early(self, opcode: int, payload: bytes) -> None:
        early = self._early
        assert early is not None
        early.append((opcode, payload))
        if len(early) >= EARLY_PAUSE:
            self.pause_reading()
        waiter = self._early_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ the adapter's side
    async def receive(self) -> tuple[int, bytes]:
        """The next data message before ``start``; ``(OP_CLOSE, b"")`` once the socket is closed."""
        early = self._early
        if early is None:
            raise RuntimeError("receive() after start()")
        while not early:
            if self.closed:
                return OP_CLOSE, b""
            self._early_waiter = self._loop.create_future()
            try:
                await self._early_waiter
            finally:
                self._early_waiter = None
        message = early.popleft()
        if self._paused and len(early) < EARLY_PAUSE // 2:
            self.resume_reading()
        return message

    def start(self, on_message: OnMessage, on_closed: Callable[[], None]) -> None:
        """Deliver every later message by callback (first those ``receive()`` did not take)."""
        early, self._early = self._early or collections.deque(), None
        self._on_message, self._on_closed = on_message, on_closed
        for opcode, payload in early:
            on_message(opcode, payload)
        if self._paused:
            self.resume_reading()
        if self.closed:
            self._on_message = self._on_closed = None
            on_closed()

    def pause_reading(self) -> None:
        """Stop taking bytes from the socket (TCP then pushes back on the provider)."""
        transport = self._transport
        if not self._paused and transport is not None and not transport.is_closing():
            self._paused = True
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport
        if self._paused and transport is not None and not transport.is_closing():
            self._paused = False
            transport.resume_reading()

    def send_text(self, text: str | bytes, *, droppable: bool = False) -> bool:
        """Queue one text message. False when it was not sent: closing, or (``droppable``, e.g.
        an audio frame) ``MAX_UNSENT_BYTES`` already wait because the provider is not reading."""
        return self._send(OP_TEXT, text.encode() if isinstance(text, str) else text, droppable)

    def send_binary(self, data: bytes, *, droppable: bool = False) -> bool:
        return self._send(OP_BINARY, data, droppable)

    def _send(self, opcode: int, payload: bytes, droppable: bool) -> bool:
        transport = self._transport
        if self._close_sent or transport is None or self._tcp_closing:
            return False
        if droppable and self._writes_paused:
            return False
        transport.write(encode_frame(opcode, payload, mask=True))
        return True

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Send our close frame, wait (at most ``CLOSE_TIMEOUT_S``) for the provider's, drop TCP."""
        self._send_close(code, reason)
        self._set_closed(self.close_code or code, self.close_reason or reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._close_received), CLOSE_TIMEOUT_S)
        self._drop_tcp()

    def abort(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close without waiting for the provider's answer: a connect that failed or timed out
        gives up on this provider at once (the close frame still goes out first)."""
        self._send_close(code, reason)
        self._set_closed(self.close_code or code, self.close_reason or reason)
        self._drop_tcp()

    # ------------------------------------------------------------------ internals
    def _send_close(self, code: int, reason: str = "") -> None:
        if not self._close_sent:
            self._close_sent = True
            self._write(encode_frame(OP_CLOSE, close_payload(code, reason), mask=True))

    def _write(self, frame: bytes) -> None:
        transport = self._transport
        if transport is not None and not self._tcp_closing:
            transport.write(frame)

    def _drop_tcp(self) -> None:
        """Close TCP once what we queued is written (our close reply included)."""
        if self._transport is not None:
            self._tcp_closing = True
            self._transport.close()

    def _set_closed(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        waiter = self._early_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        on_closed = self._on_closed
        # Nothing is delivered once closed: letting go of the session's bound methods (the session
        # holds this socket) frees an ended call by reference counting, without a full collection.
        self._on_message = self._on_closed = None
        if on_closed is not None:
            on_closed()
