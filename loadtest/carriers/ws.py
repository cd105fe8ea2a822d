"""The carrier's end of the media WebSocket: a lean RFC 6455 client on a raw asyncio transport.

Why not aiohttp's client WebSocket: a call is 50 small text frames a second each way, and per
received message aiohttp spends a future, a ``WSMessage`` and a task wake-up, per sent one an
async send path; at ~300 calls that alone filled the generator's core. Here the upgrade is one
request written by hand, received frames are parsed in ``data_received`` and handed to the call
synchronously, and a send writes one masked frame straight to the transport.

The framing is loadtest's own rather than the gateway's ``providers/ws_frames.py`` (same sans-I/O
shape): the generator checks the gateway's frames, so it must not share the code it checks, and
nothing in loadtest imports the gateway. It is the client half only: server frames are never
masked, ours always are, and since no extension or subprotocol is offered none may be negotiated.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping
from typing import Final, cast
from urllib.parse import urlsplit

from mypy_extensions import mypyc_attr
from websockets.utils import accept_key

try:  # the C routine ships with websockets wheels; the pure-Python one is its documented fallback
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

# What the per-frame code reads is Final: a C static under mypyc, not a dictionary lookup per use
# (docs/architecture.md, "Compiled build").
_apply_mask: Final[Callable[[bytes, bytes], bytes]] = apply_mask
OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005  # received without a code; never sent
CLOSE_ABNORMAL: Final = 1006  # the connection ended without a close frame; never sent
CLOSE_INVALID_PAYLOAD: Final = 1007
CLOSE_TOO_BIG: Final = 1009

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # aiohttp's client default; a 30 s Telnyx L16 chunk is ~1.3 MB
CLOSE_TIMEOUT_S = 10.0  # how long our close waits for the server's close frame (aiohttp's default)
MAX_UNSENT_BYTES: Final = 256 * 1024  # ~20 s of Twilio media waiting to be sent: the server is not reading
_MAX_CONTROL_PAYLOAD: Final = 125
_MAX_RESPONSE_HEAD: Final = 16 * 1024

MessageHandler = Callable[[int, bytes], None]
_pack_head16: Final = struct.Struct("!BBH").pack
_pack_head64: Final = struct.Struct("!BBQ").pack
_random_key: Final = random.getrandbits


class FrameError(Exception):
    """The server broke RFC 6455; ``close_code`` is what we close with."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


@mypyc_attr(native_class=False)  # compiled (setup.py), it could not otherwise extend ConnectionError
class HandshakeError(ConnectionError):
    """The server did not accept the upgrade, or answered it wrongly."""


class FrameParser:
    """Incremental parser of server frames: ``feed`` returns every message the new bytes complete.

    Data messages come reassembled from their fragments (``OP_TEXT``/``OP_BINARY``), control frames
    as they arrive. A frame that would make a message exceed ``max_message_bytes`` is refused from
    its header, before its payload is buffered. A broken frame stops parsing for good: ``error``
    says why, and the messages completed before it in the same bytes are still returned.
    """

    __slots__ = ("_buf", "_frag_len", "_frag_op", "_frag_parts", "error", "idle", "max_message_bytes")

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = b""
        self.max_message_bytes = max_message_bytes
        self._frag_op = 0  # opcode of the data message being reassembled, 0 when none
        self._frag_parts: list[bytes] = []
        self._frag_len = 0
        self.error: FrameError | None = None
        # Nothing buffered, no fragmented message open, no error: the next bytes start a frame.
        self.idle = True

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        if self.error is not None:
            return out
        buf = self._buf + data if self._buf else data
        try:
            pos = self._parse(buf, out)
        except FrameError as exc:
            self.error = exc
            self._buf = b""
            self.idle = False
            return out
        self._buf = buf[pos:] if pos < len(buf) else b""
        self.idle = not self._buf and not self._frag_op
        return out

    def _parse(self, buf: bytes, out: list[tuple[int, bytes]]) -> int:
        """Appends the messages completed in ``buf`` to ``out``; returns where unparsed bytes begin."""
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            if b1 & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "server frames must not be masked")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = (buf[head] << 8) | buf[head + 1]
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                (length,) = struct.unpack_from("!Q", buf, head)
                if length >> 63:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "64-bit length with its top bit set")
                head += 8
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                if length > _MAX_CONTROL_PAYLOAD:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes")
                if not fin:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            elif opcode > OP_BINARY:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            elif self._frag_len + length > self.max_message_bytes:
                raise FrameError(CLOSE_TOO_BIG, f"message larger than {self.max_message_bytes} bytes")
            frame_end = head + length
            if frame_end > end:
                break
            payload = buf[head:frame_end]
            pos = frame_end
            if opcode >= OP_CLOSE:
                out.append((opcode, payload))
            elif opcode == OP_CONT:
                if not self._frag_op:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation frame with no message to continue")
                self._frag_parts.append(payload)
                self._frag_len += length
                if fin:
                    out.append((self._frag_op, b"".join(self._frag_parts)))
                    self._frag_op, self._frag_parts, self._frag_len = 0, [], 0
            elif self._frag_op:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            elif fin:
                out.append((opcode, payload))
            else:
                self._frag_op, self._frag_parts, self._frag_len = opcode, [payload], length
        return pos


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked with a fresh key.

    The key comes from ``random`` (as aiohttp's does), not ``os.urandom``: masking only stops a
    proxy from reading attacker-chosen bytes, and a syscall per frame is a visible cost here.
    """
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = _pack_head16(0x80 | opcode, 0xFE, length)
    else:
        header = _pack_head64(0x80 | opcode, 0xFF, length)
    key = _random_key(32).to_bytes(4, "little")
    return header + key + _apply_mask(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    """Body of a close frame; the reason is cut to fit the 125-byte control-frame limit."""
    return struct.pack("!H", code) + reason.encode()[: _MAX_CONTROL_PAYLOAD - 2]


def parse_close(payload: bytes) -> tuple[int, str]:
    """``(code, reason)`` of a received close frame; ``CLOSE_NO_STATUS`` when it carried none."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte body")
    (code,) = struct.unpack_from("!H", payload)
    if not (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8") from None
    return code, reason


def upgrade_request(url: str, key: str, headers: Mapping[str, str]) -> bytes:
    """The GET that asks for the upgrade (RFC 6455 4.1), with ``headers`` added."""
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if parts.scheme == "wss" else 80
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != default_port:
        host = f"{host}:{parts.port}"
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_upgrade_response(head: bytes, key: str) -> None:
    """Raises ``HandshakeError`` unless ``head`` (status line and headers) accepts our upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.") or not status[1].isdigit():
        raise HandshakeError(f"not an HTTP response: {lines[0][:80]!r}")
    if status[1] != "101":
        raise HandshakeError(f"upgrade refused: HTTP {' '.join(status[1:])}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(f"malformed header line {line[:80]!r}")
        name = name.strip().lower()
        fields[name] = f"{fields[name]}, {value.strip()}" if name in fields else value.strip()
    if fields.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("101 without 'Upgrade: websocket'")
    if "upgrade" not in (t.strip().lower() for t in fields.get("connection", "").split(",")):
        raise HandshakeError("101 without 'Connection: Upgrade'")
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
        if name in fields:
            raise HandshakeError(f"server negotiated {name} we never offered")


class ClientWebSocket(asyncio.Protocol):
    """One client connection. ``connect`` does the upgrade; ``start`` begins delivering messages.

    Text and binary messages go to the handler given to ``start``, called from ``data_received``;
    pings are answered there too. ``closed`` turns True when no more messages will arrive (close
    frame, protocol error or TCP gone); ``close_code``/``close_reason`` are then the server's
    (``CLOSE_ABNORMAL`` without a close frame), or the code we failed the connection with when
    ``protocol_error`` is set. ``exception`` is what ended the TCP connection, if anything did.
    """

    __slots__ = (
        "_close_sent", "_done", "_gone", "_handler", "_handshake", "_head", "_key", "_loop", "_lost",
        "_parser", "_request", "_transport", "_upgraded", "_writable", "close_code", "close_reason",
        "closed", "closed_at", "exception", "protocol_error",
    )  # fmt: skip

    def __init__(self, key: str, request: bytes, max_message_bytes: int) -> None:
        self._key = key
        self._request = request
        self._parser = FrameParser(max_message_bytes)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self._head = b""  # response bytes until the upgrade is accepted, then unread frame bytes
        self._upgraded = False
        self._handler: MessageHandler | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._gone: asyncio.Future[None] = self._loop.create_future()  # TCP closed
        self._close_sent = False
        self._writable = False  # upgraded, no close frame sent, TCP not gone, buffer below high water
        self._lost = False  # connection_lost was called
        self.closed = False
        self.closed_at: float | None = None  # time.monotonic() when ``closed`` turned True
        self.close_code: int | None = None
        self.close_reason = ""
        self.protocol_error: FrameError | None = None
        self.exception: Exception | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> ClientWebSocket:
        """Opens ``ws://`` or ``wss://`` ``url`` and completes the upgrade (bound it with a timeout).

        Reading pauses once upgraded, so nothing is delivered before ``start``.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        sock = cls(key, upgrade_request(url, key, headers or {}), max_message_bytes)
        tls: ssl.SSLContext | None = None
        if parts.scheme == "wss":
            tls = ssl_context or ssl.create_default_context()
        port = parts.port or (443 if tls else 80)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(
            lambda: sock, parts.hostname, port, ssl=tls, server_hostname=parts.hostname if tls else None
        )
        try:
            await sock._handshake
        except BaseException:
            transport.abort()
            raise
        return sock

    def start(self, handler: MessageHandler) -> None:
        """From now on data messages go to ``handler(opcode, payload)`` as they arrive."""
        self._handler = handler
        early, self._head = self._head, b""
        if early:
            self._feed(early)
        if self._lost:
            self._set_closed(CLOSE_ABNORMAL)
        elif self._transport is not None and not self.closed:
            self._transport.resume_reading()

    def send_text(self, text: bytes) -> bool:
        """Writes one text message (UTF-8 bytes); False when it cannot go now.

        Never waits: a server that stops reading gets messages refused once ``MAX_UNSENT_BYTES``
        are queued (the transport's high-water mark), instead of stalling every other call's pacing.
        """
        if not self._writable:
            return False
        length = len(text)  # encode_frame, inlined for the per-frame path
        if length < 126:
            header = bytes((0x81, 0x80 | length))
        elif length < 65536:
            header = _pack_head16(0x81, 0xFE, length)
        else:
            header = _pack_head64(0x81, 0xFF, length)
        key = _random_key(32).to_bytes(4, "little")
        self._transport.write(header + key + _apply_mask(text, key))  # type: ignore[union-attr]  # set with _writable
        return True

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Ends the connection: our close frame unless the exchange already happened, the server's
        reply, then the server dropping TCP (RFC 6455 7.1.1: the server closes first, so it is the
        one holding TIME_WAIT; and the gateway only does once its end-of-call work is done), all
        within ``CLOSE_TIMEOUT_S``; then TCP goes in any case."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if not self.closed:
                    self._send_close(code, reason)
                    await asyncio.shield(self._done)
                await asyncio.shield(self._gone)
        except TimeoutError:
            self._set_closed(CLOSE_ABNORMAL)
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Returns once ``closed`` is True."""
        await asyncio.shield(self._done)

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = self._transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        tr.set_write_buffer_limits(high=MAX_UNSENT_BYTES)
        sock = tr.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # marks must not wait for Nagle
        tr.write(self._request)

    def data_received(self, data: bytes) -> None:
        handler = self._handler
        if handler is not None:
            parser = self._parser
            if parser.idle and not self.closed:
                # A call's usual read is one or a few whole, unmasked, unfragmented text frames of
                # under 64 KiB: handled here without the parser's general loop, which gets the rest.
                size = len(data)
                limit = parser.max_message_bytes
                pos = 0
                while size - pos > 3 and data[pos] == 0x81:
                    length = data[pos + 1]  # > 126: a 64-bit length or the mask bit (a violation)
                    if length < 126:
                        head = pos + 2
                    elif length == 126:
                        length = (data[pos + 2] << 8) | data[pos + 3]
                        head = pos + 4
                    else:
                        break
                    end = head + length
                    if end > size or length > limit:
                        break
                    handler(OP_TEXT, data[head:end])
                    pos = end
                if pos == size:
                    return
                if pos:
                    data = data[pos:]
            self._feed(data)
        elif self._upgraded:
            self._head += data  # arrived before start() although reading was paused
        else:
            self._on_response(data)

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = self._upgraded and not (self._close_sent or self._lost)

    def eof_received(self) -> bool | None:
        return None  # close the transport: the server is done

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._writable = False
        if not self._gone.done():
            self._gone.set_result(None)
        if exc is not None and self.exception is None:
            self.exception = exc
        if not self._handshake.done():
            self._handshake.set_exception(exc or HandshakeError("connection closed during the upgrade"))
        if self._handler is not None or not self._upgraded:
            self._set_closed(CLOSE_ABNORMAL)
        # else start() delivers what came before the loss, then closes

    # ------------------------------------------------------------------ internals
    def _on_response(self, data: bytes) -> None:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_RESPONSE_HEAD:
                self._fail_handshake(HandshakeError("upgrade response headers too long"))
            return
        head, self._head = self._head[:end], self._head[end + 4 :]
        try:
            check_upgrade_response(head, self._key)
        except HandshakeError as exc:
            self._fail_handshake(exc)
            return
        self._upgraded = True
        self._writable = True
        assert self._transport is not None
        self._transport.pause_reading()
        self._handshake.set_result(None)

    def _fail_handshake(self, exc: HandshakeError) -> None:
        if not self._handshake.done():
            self._handshake.set_exception(exc)
        assert self._transport is not None
        self._transport.abort()

    def _feed(self, data: bytes) -> None:
        if self.closed:
            return
        parser = self._parser
        handler = self._handler
        assert handler is not None
        for message in parser.feed(data):
            opcode = message[0]
            if opcode <= OP_BINARY:
                handler(opcode, message[1])
            elif opcode == OP_PING:
                self._write(encode_frame(OP_PONG, message[1]))
            elif opcode == OP_CLOSE:
                self._on_close_frame(message[1])
                return
        if parser.error is not None:
            self._fail(parser.error)

    def _on_close_frame(self, payload: bytes) -> None:
        try:
            code, reason = parse_close(payload)
        except FrameError as exc:
            self._fail(exc)
            return
        self.close_reason = reason
        # The reply echoes the code (RFC 6455 5.5.1); the server drops TCP next (see close()).
        self._send_close(code if code != CLOSE_NO_STATUS else None)
        self._set_closed(code)

    def _fail(self, exc: FrameError) -> None:
        """Fails the connection (RFC 6455 7.1.7): close frame with the error's code, then TCP."""
        self.protocol_error = exc
        self._send_close(exc.close_code, exc.reason)
        self._set_closed(exc.close_code)
        if self._transport is not None:
            self._transport.close()

    def _send_close(self, code: int | None, reason: str = "") -> None:
        if not self._close_sent:
            self._close_sent = True
            self._writable = False
            self._write(encode_frame(OP_CLOSE, b"" if code is None else close_payload(code, reason)))

    def _write(self, frame: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame)

    def _set_closed(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            self.closed_at = time.monotonic()
            self.close_code = code
            if not self._done.done():
                self._done.set_result(None)
