"""RFC 6455 framing, sans-I/O: bytes in → whole messages out, and the bytes of frames to send.

Used by both media legs: the carriers' sockets (``gateway/media_socket.py``, server side) and
the providers' (``providers/ws_client.py``, client side). Why voicegw frames them itself: a call
is 50 small frames a second each way on each leg, and aiohttp's WebSockets spend, per message,
about as much CPU as the rest of the gateway (a future per ``receive()``, the ``WSMessage``
build, the async send path): measured in ``docs/architecture.md`` ("Media transport").
What is left is small enough to state exactly: no extension is ever negotiated (so every RSV bit
must be 0), text/binary messages may be fragmented, control frames may be interleaved, and
masking goes one way. Unmasking uses the ``websockets`` C routine. UTF-8 of text messages is
checked by the JSON parser that reads them.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Final

try:  # the C routine ships with websockets wheels; the pure-Python one is its documented fallback
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

# Names the per-frame code reads are ``Final``: under mypyc a Final is a C constant or static, while
# any other module-level name costs a dictionary lookup on every use ("Compiled build" in
# docs/architecture.md).
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
CLOSE_ABNORMAL: Final = 1006  # the connection dropped without a close frame; never sent
CLOSE_INVALID_PAYLOAD: Final = 1007
CLOSE_TOO_BIG: Final = 1009

_MAX_CONTROL_PAYLOAD: Final = 125
_BYTE: Final = tuple(bytes((i,)) for i in range(256))  # a short frame's header is two of these
_pack_head16: Final = struct.Struct("!BBH").pack  # a 20 ms frame's header (126-65535 bytes)


class FrameError(Exception):
    """The peer broke RFC 6455; ``close_code`` is what to close with."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
        self.messages: list[tuple[int, bytes]] = []  # completed by the same bytes, before the error


class FrameParser:
    """Incremental parser for one direction of a connection.

    ``feed`` returns every message completed by the new bytes as ``(opcode, payload)``: data
    messages reassembled from their fragments (``OP_TEXT``/``OP_BINARY``), control frames as they
    come. A frame larger than ``max_message_bytes`` is refused from its header, before its payload
    is buffered.
    """

    __slots__ = ("_buf", "_expect_mask", "_frag_len", "_frag_op", "_frag_parts", "_max")

    def __init__(self, *, from_client: bool, max_message_bytes: int) -> None:
        self._buf = b""
        self._expect_mask = 0x80 if from_client else 0
        self._max = max_message_bytes
        self._frag_op = 0  # opcode of the data message being reassembled, 0 when none
        self._frag_parts: list[bytes] = []
        self._frag_len = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Raises ``FrameError`` (carrying the messages completed before it); the connection is
        then unusable and the parser must not be fed again."""
        out: list[tuple[int, bytes]] = []
        try:
            return self._parse(self._buf + data if self._buf else data, out)
        except FrameError as exc:
            exc.messages = out
            self._buf = b""
            raise

    def _parse(self, buf: bytes, out: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        pos = 0
        end_of_data = len(buf)
        while end_of_data - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension was negotiated)")
            if b1 & 0x80 != self._expect_mask:
                rule = "frames must be masked" if self._expect_mask else "frames must not be masked"
                raise FrameError(CLOSE_PROTOCOL_ERROR, rule)
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end_of_data - head < 2:
                    break
                length = (buf[head] << 8) | buf[head + 1]
                head += 2
            elif length == 127:
                if end_of_data - head < 8:
                    break
                (length,) = struct.unpack_from("!Q", buf, head)
                if length >> 63:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "64-bit length with its top bit set")
                head += 8
            if opcode >= OP_CLOSE:  # a control frame, when known
                if opcode > OP_PONG:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                if length > _MAX_CONTROL_PAYLOAD:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes")
                if not b0 & 0x80:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            elif opcode > OP_BINARY:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            elif self._frag_len + length > self._max:
                raise FrameError(CLOSE_TOO_BIG, f"message larger than {self._max} bytes")
            key_at = head
            if self._expect_mask:
                head += 4
            frame_end = head + length
            if frame_end > end_of_data:
                break
            payload = buf[head:frame_end]
            if self._expect_mask and length:
                payload = _apply_mask(payload, buf[key_at:head])
            pos = frame_end
            if opcode >= OP_CLOSE:
                out.append((opcode, payload))
            elif opcode == OP_CONT:
                if not self._frag_op:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation frame with no message to continue")
                self._frag_parts.append(payload)
                self._frag_len += length
                if b0 & 0x80:
                    out.append((self._frag_op, b"".join(self._frag_parts)))
                    self._frag_op, self._frag_parts, self._frag_len = 0, [], 0
            else:
                if self._frag_op:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                if b0 & 0x80:
                    out.append((opcode, payload))
                else:
                    self._frag_op, self._frag_parts, self._frag_len = opcode, [payload], length
        self._buf = buf[pos:] if pos < end_of_data else b""
        return out


class _MaskKeys:
    """Masking keys from the OS's CSPRNG (RFC 6455 asks for unpredictable ones), fetched 4 KiB at a
    time: one ``getrandom`` per frame was a fifth of the gateway's system calls in a relay run."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def take(self) -> bytes:
        pos = self._pos
        if pos >= len(self._pool):
            self._pool = os.urandom(4096)
            pos = 0
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


_mask_keys: Final = _MaskKeys()


def encode_frame(opcode: int, payload: bytes, *, mask: bool = False) -> bytes:
    """One final frame. Clients must mask (``mask=True``, a fresh random key per frame); servers must not."""
    length = len(payload)
    first = 0x80 | opcode
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = _BYTE[first] + _BYTE[mask_bit | length]
    elif length < 65536:
        header = _pack_head16(first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not mask:
        return header + payload
    key = _mask_keys.take()
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
