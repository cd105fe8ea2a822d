"""Typed carrier media-stream events, the protocol error, and the WebSocket close codes we use.

Carrier codecs (``TwilioStream``, ``TelnyxStream``) turn each text frame into one of these
events and raise ``ProtocolViolation`` for anything off-protocol. The gateway is strict: where
Twilio would merely log a warning (31950/31951), we close the socket with the code below.

Close codes (4000-4999 is the application range; the last three digits mirror HTTP):

==========================  =====  ===================================================================
constant                    code   meaning
==========================  =====  ===================================================================
CLOSE_MALFORMED             4400   not JSON, not an object, or a field missing / of the wrong type
CLOSE_BAD_TOKEN             4401   stream token missing, forged or expired
CLOSE_WRONG_STREAM          4403   ``streamSid`` / ``stream_id`` differs from the one in ``start``
CLOSE_UNKNOWN_EVENT         4405   ``event`` is not one this carrier defines
CLOSE_UNSUPPORTED_FORMAT    4406   ``start`` announces a media format we cannot decode
CLOSE_START_TIMEOUT         4408   ``start`` never arrived in time
CLOSE_DUPLICATE_SOCKET      4409   a second media socket for a call that already has one
CLOSE_BINARY_FRAME          4415   a binary frame (both carriers speak JSON text only)
CLOSE_BAD_PAYLOAD           4422   media payload is not valid base64, empty, or not whole samples
CLOSE_OUT_OF_ORDER          4425   media/dtmf/mark before ``start``; second ``connected``/``start``;
                                   anything after ``stop``
CLOSE_FLOOD                 4429   more messages than the per-socket rate allows
CLOSE_TOO_BIG               1009   frame larger than the socket's limit (aiohttp enforces it)
==========================  =====  ===================================================================
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final, Protocol

from providers.base import Audio, AudioFormat, b64decode_strict

CLOSE_MALFORMED: Final = 4400
CLOSE_BAD_TOKEN: Final = 4401
CLOSE_WRONG_STREAM: Final = 4403
CLOSE_UNKNOWN_EVENT: Final = 4405
CLOSE_UNSUPPORTED_FORMAT: Final = 4406
CLOSE_START_TIMEOUT: Final = 4408
CLOSE_DUPLICATE_SOCKET: Final = 4409
CLOSE_BINARY_FRAME: Final = 4415
CLOSE_BAD_PAYLOAD: Final = 4422
CLOSE_OUT_OF_ORDER: Final = 4425
CLOSE_FLOOD: Final = 4429
CLOSE_TOO_BIG: Final = 1009

MAX_CLOSE_REASON_BYTES: Final = 123  # RFC 6455: a close frame's payload is at most 125 bytes
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


class ProtocolViolation(Exception):
    """The carrier broke the protocol; close the socket with ``close_code`` and ``reason``.

    ``reason`` is short, contains no payload data beyond a clipped ``repr`` and fits a close
    frame, so it is safe both to log and to send.
    """

    def __init__(self, close_code: int, reason: str) -> None:
        encoded = reason.encode("utf-8")
        if len(encoded) > MAX_CLOSE_REASON_BYTES:
            reason = encoded[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.close_code} {self.reason}"


def clip(value: object, limit: int = 32) -> str:
    """A bounded ``repr`` of carrier-supplied data for close reasons and log lines."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(slots=True)
class Connected:
    """The carrier's first frame (optional for us; never twice)."""


@dataclass(slots=True)
class Start:
    """The stream began. ``call_ref`` is Twilio's ``callSid`` or Telnyx's ``call_control_id``."""

    stream_id: str
    call_ref: str
    custom_parameters: dict[str, str]
    media_format: AudioFormat
    account_id: str
    from_number: str
    to_number: str


@dataclass(slots=True, init=False)
class Media:
    """Caller audio in ``Start.media_format``, with the carrier's counters where its codec reads them
    (Telnyx's, for ordering diagnostics).

    One is made per caller frame: the ``__init__`` is written out because mypyc calls a written one
    natively, while the one ``dataclass`` generates runs as interpreted Python (~1,300 instructions
    a frame)."""

    audio: Audio
    chunk: int | None
    timestamp_ms: int | None

    def __init__(self, audio: Audio, chunk: int | None = None, timestamp_ms: int | None = None) -> None:
        self.audio = audio
        self.chunk = chunk
        self.timestamp_ms = timestamp_ms


@dataclass(slots=True)
class Dtmf:
    digit: str


@dataclass(slots=True)
class MarkEcho:
    """The carrier played (or cleared) everything sent before the mark called ``name``."""

    name: str


@dataclass(slots=True)
class Stop:
    """The carrier ended the stream; no frame may follow."""


@dataclass(slots=True)
class CarrierError:
    """A Telnyx ``error`` frame (e.g. ``100005`` rate_limit_reached); the stream continues."""

    code: str
    title: str
    detail: str = ""


CarrierEvent = Connected | Start | Media | Dtmf | MarkEcho | Stop | CarrierError


class CarrierStream(Protocol):
    """What the call session needs from a carrier codec (``TwilioStream``, ``TelnyxStream``)."""

    stream_id: str | None
    call_ref: str | None
    media_format: AudioFormat | None  # carrier -> us, known once ``Start`` was returned
    outbound_format: AudioFormat  # us -> carrier

    def receive(self, text: str | bytes) -> CarrierEvent: ...

    # Messages to send come as the UTF-8 bytes of their JSON: what the socket writes.
    def media_message(self, audio: Audio) -> bytes: ...

    def mark_message(self, name: str) -> bytes: ...

    def clear_message(self) -> bytes: ...


# ---------------------------------------------------------------------------------------------
# Field checks shared by the carrier codecs (each raises ProtocolViolation with a precise code)
# ---------------------------------------------------------------------------------------------


class StreamPhase(enum.Enum):
    """Where a media stream is: carriers send ``connected``, ``start`` once, media…, ``stop``."""

    NEW = enum.auto()
    CONNECTED = enum.auto()
    STARTED = enum.auto()
    STOPPED = enum.auto()


def require_started(phase: StreamPhase, event: str) -> None:
    """Media, DTMF, marks and stop are only valid between ``start`` and ``stop``."""
    if phase is not StreamPhase.STARTED:
        when = "after stop" if phase is StreamPhase.STOPPED else "before start"
        raise ProtocolViolation(CLOSE_OUT_OF_ORDER, f"{event} {when}")


class StreamLifecycle(ABC):
    """The part of a carrier stream's state machine both carriers share: ``connected`` first
    (optional, once), DTMF, mark echoes and ``stop`` only while started, nothing unknown."""

    _phase: StreamPhase

    @abstractmethod
    def _check_started(self, msg: dict[str, Any], event: str) -> None:
        """Started, and the message names this stream (each carrier has its own id field)."""

    def _lifecycle(self, msg: dict[str, Any], event: object) -> CarrierEvent:
        if event == "dtmf":
            self._check_started(msg, "dtmf")
            digit = require_dict(msg, "dtmf").get("digit")
            if type(digit) is not str or digit not in DTMF_DIGITS:
                raise ProtocolViolation(CLOSE_MALFORMED, f"invalid dtmf digit {clip(digit)}")
            return Dtmf(digit)
        if event == "mark":
            self._check_started(msg, "mark")
            name = require_dict(msg, "mark").get("name")
            if type(name) is not str:
                raise ProtocolViolation(CLOSE_MALFORMED, "mark.name must be a string")
            return MarkEcho(name)
        if event == "stop":
            self._check_started(msg, "stop")
            self._phase = StreamPhase.STOPPED
            return Stop()
        if event == "connected":
            if self._phase is not StreamPhase.NEW:
                raise ProtocolViolation(CLOSE_OUT_OF_ORDER, "connected after the stream began")
            self._phase = StreamPhase.CONNECTED
            return Connected()
        if type(event) is not str:
            raise ProtocolViolation(CLOSE_MALFORMED, "event must be a string")
        raise ProtocolViolation(CLOSE_UNKNOWN_EVENT, f"unknown event {clip(event)}")


def require_dict(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if type(value) is not dict:
        raise ProtocolViolation(CLOSE_MALFORMED, f"{key} must be an object")
    return value


def require_str(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    if type(value) is not str or not value:
        raise ProtocolViolation(CLOSE_MALFORMED, f"{key} must be a non-empty string")
    return value


def optional_str(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key, "")
    if type(value) is not str:
        raise ProtocolViolation(CLOSE_MALFORMED, f"{key} must be a string")
    return value


def string_map(msg: dict[str, Any], key: str) -> dict[str, str]:
    """An optional object of string values (custom parameters)."""
    value = msg.get(key)
    if value is None:
        return {}
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise ProtocolViolation(CLOSE_MALFORMED, f"{key} must be an object of strings")
    return value


def optional_counter(msg: dict[str, Any], key: str) -> int | None:
    """A carrier counter (``chunk``, ``timestamp``): documented as a digit string; ints tolerated."""
    value = msg.get(key)
    if value is None:
        return None
    if type(value) is str and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    raise ProtocolViolation(CLOSE_MALFORMED, f"{key} must be a non-negative integer string")


def decode_payload(media: dict[str, Any], sample_width: int) -> tuple[str, bytes]:
    """Validate and decode ``media.payload``; returns the base64 text and its bytes.

    A full strict decode in C is the cheapest *correct* check: for a 20 ms frame (216 chars)
    ``b64decode_strict`` (pybase64) takes ~0.3 us (``binascii``'s strict mode twice that),
    while pure-Python alphabet checks (regex, ``str.translate``) take 1.4-4 us. The decoded
    bytes are kept in the ``Audio`` next to the original text, so passthrough forwards the text
    unchanged and a transcoder never decodes again.
    """
    payload = media.get("payload")
    if type(payload) is not str:
        raise ProtocolViolation(CLOSE_MALFORMED, "media.payload must be a string")
    # The decoder refuses bad characters, padding inside the text and surplus padding; an empty
    # or unpadded payload gets this clearer message first.
    if not payload or len(payload) % 4 or payload[-3] == "=":
        raise ProtocolViolation(CLOSE_BAD_PAYLOAD, "payload is empty or not padded base64")
    try:
        raw = b64decode_strict(payload)
    except ValueError:  # binascii.Error, non-ASCII text included
        raise ProtocolViolation(CLOSE_BAD_PAYLOAD, "payload is not valid base64") from None
    if len(raw) % sample_width:
        raise ProtocolViolation(CLOSE_BAD_PAYLOAD, "payload is not a whole number of samples")
    return payload, raw
