"""Sans-I/O carrier wire formats: what fake Twilio/Telnyx send, and checking what the gateway sends back.

Field names, JSON types and counters follow telephony.md 1.4/1.5 (Twilio: camelCase, string counters)
and 2.2/2.3 (Telnyx: snake_case, top-level ``stream_id``). Outbound media uses pre-encoded base64 so the
per-frame cost is one bytes format. Messages are built as UTF-8 bytes, what the socket sends.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson


class ProtocolViolation(ValueError):
    """A gateway message the real carrier would reject (Twilio warning 31951, Telnyx error frame)."""


@dataclass(frozen=True, slots=True)
class MediaOut:
    audio: bytes


@dataclass(frozen=True, slots=True)
class MarkOut:
    name: str


@dataclass(frozen=True, slots=True)
class ClearOut:
    pass


GatewayMessage = MediaOut | MarkOut | ClearOut


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _media_format(fields: bytes, stream_key: str, stream_id: str) -> bytes:
    """A media message template taking (sequence number, chunk, timestamp, base64 payload)."""
    tail = orjson.dumps({stream_key: stream_id})[1:].replace(b"%", b"%%")
    return (
        b'{"event":"media","' + fields + b'":"%d","media":{"track":"inbound","chunk":"%d",'
        b'"timestamp":"%d","payload":"%s"},' + tail
    )


def _decode_payload(payload: Any) -> bytes:
    if not isinstance(payload, str):
        raise ProtocolViolation("media.payload must be a base64 string")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolViolation("media.payload is not valid base64") from exc
    if audio[:4] == b"RIFF":
        raise ProtocolViolation("media.payload carries a WAV header; carriers want raw audio")
    return audio


def _require_keys(msg: dict[str, Any], allowed: set[str], required: set[str], what: str) -> None:
    keys = set(msg)
    if not required <= keys:
        raise ProtocolViolation(f"{what} is missing {sorted(required - keys)}")
    if not keys <= allowed:
        raise ProtocolViolation(f"{what} has extra fields {sorted(keys - allowed)}")


def _load(text: str | bytes) -> dict[str, Any]:
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolViolation("message is not JSON") from exc
    if not isinstance(msg, dict):
        raise ProtocolViolation("message is not a JSON object")
    return msg


# Media messages a stream already accepted, by their exact text, with what parse() made of them.
# Gateway media messages carry no counters, and an echo returns the same few payloads (digital
# silence above all), so most arrive byte for byte again: one dict lookup then stands for the JSON
# parse, the field checks and the base64 decode. Only accepted media messages are kept, so a hit is
# exactly what parsing would return; a few small ones per stream bound the memory.
_KNOWN_LIMIT: Final = 16
_KNOWN_MAX_BYTES: Final = 1024


def _memo_parse(
    known: dict[str | bytes, MediaOut], text: str | bytes, parse: Callable[[str | bytes], GatewayMessage]
) -> GatewayMessage:
    """``parse(text)``, answered from ``known`` when this exact media message was parsed before."""
    seen = known.get(text)
    if seen is not None:
        return seen
    message = parse(text)
    if type(message) is MediaOut and len(text) <= _KNOWN_MAX_BYTES and len(known) < _KNOWN_LIMIT:
        known[text] = message
    return message


def _mark_name(msg: dict[str, Any]) -> str:
    mark = msg.get("mark")
    if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
        raise ProtocolViolation("mark needs mark.name (a string)")
    return str(mark["name"])


class TwilioWire:
    """One Twilio media stream: counters, message builders, and strict checking of gateway messages."""

    __slots__ = ("_chunk", "_media_fmt", "_seq", "account_sid", "call_sid", "known_media", "stream_sid")

    def __init__(self, account_sid: str, call_sid: str, stream_sid: str) -> None:
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self._media_fmt = _media_format(b"sequenceNumber", "streamSid", stream_sid)
        self._seq = 0
        self._chunk = 0
        self.known_media: dict[str | bytes, MediaOut] = {}  # see _memo_parse

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def connected(self) -> bytes:
        return _json({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, str]) -> bytes:
        return _json(
            {
                "event": "start",
                "sequenceNumber": str(self._next_seq()),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )

    def media(self, payload_b64: bytes) -> bytes:
        self._seq += 1
        chunk = self._chunk = self._chunk + 1
        return self._media_fmt % (self._seq, chunk, (chunk - 1) * 20, payload_b64)

    def dtmf(self, digit: str) -> bytes:
        return _json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": str(self._next_seq()),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> bytes:
        return _json(
            {
                "event": "mark",
                "sequenceNumber": str(self._next_seq()),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> bytes:
        return _json(
            {
                "event": "stop",
                "sequenceNumber": str(self._next_seq()),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    def error(self, code: str, title: str, detail: str) -> bytes | None:
        """Twilio reports protocol problems out of band (debugger warnings), never on the socket."""
        return None

    def parse(self, text: str | bytes) -> GatewayMessage:
        """Only ``media``/``mark``/``clear`` with exactly the documented fields and our streamSid."""
        return _memo_parse(self.known_media, text, self._parse)

    def _parse(self, text: str | bytes) -> GatewayMessage:
        msg = _load(text)
        event = msg.get("event")
        if msg.get("streamSid") != self.stream_sid:
            raise ProtocolViolation(f"{event} message has wrong or missing streamSid")
        if event == "media":
            _require_keys(msg, {"event", "streamSid", "media"}, {"event", "streamSid", "media"}, "media")
            media = msg["media"]
            if not isinstance(media, dict) or set(media) != {"payload"}:
                raise ProtocolViolation("media must be exactly {payload}")
            return MediaOut(_decode_payload(media["payload"]))
        if event == "mark":
            _require_keys(msg, {"event", "streamSid", "mark"}, {"event", "streamSid", "mark"}, "mark")
            return MarkOut(_mark_name(msg))
        if event == "clear":
            _require_keys(msg, {"event", "streamSid"}, {"event", "streamSid"}, "clear")
            return ClearOut()
        raise ProtocolViolation(f"unknown message type {event!r}")


class TelnyxWire:
    """One Telnyx media stream (RTP bidirectional mode)."""

    __slots__ = (
        "_chunk", "_media_fmt", "_out_bps", "_seq", "call_control_id", "call_session_id", "encoding",
        "from_", "known_media", "sample_rate", "stream_id", "to", "user_id",
    )  # fmt: skip

    # Telnyx: "RTP media chunks sent back to Telnyx can contain 20 milliseconds to 30 seconds of audio."
    MIN_CHUNK_S = 0.020
    MAX_CHUNK_S = 30.0

    def __init__(
        self,
        call_control_id: str,
        stream_id: str,
        user_id: str,
        call_session_id: str,
        from_: str,
        to: str,
        encoding: str,
        sample_rate: int,
        outbound_bytes_per_second: int,
    ) -> None:
        self.call_control_id = call_control_id
        self.stream_id = stream_id
        self.user_id = user_id
        self.call_session_id = call_session_id
        self.from_ = from_
        self.to = to
        self.encoding = encoding
        self.sample_rate = sample_rate
        self._out_bps = outbound_bytes_per_second
        self._media_fmt = _media_format(b"sequence_number", "stream_id", stream_id)
        self._seq = 0
        self._chunk = 0
        self.known_media: dict[str | bytes, MediaOut] = {}  # see _memo_parse

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def connected(self) -> bytes:
        return _json({"event": "connected", "version": "1.0.0"})

    def start(self, custom_parameters: dict[str, str]) -> bytes:
        return _json(
            {
                "event": "start",
                "sequence_number": str(self._next_seq()),
                "stream_id": self.stream_id,
                "start": {
                    "user_id": self.user_id,
                    "call_control_id": self.call_control_id,
                    "call_session_id": self.call_session_id,
                    "from": self.from_,
                    "to": self.to,
                    "custom_parameters": custom_parameters,
                    "media_format": {
                        "encoding": self.encoding,
                        "sample_rate": self.sample_rate,
                        "channels": 1,
                    },
                },
            }
        )

    def media(self, payload_b64: bytes) -> bytes:
        self._seq += 1
        chunk = self._chunk = self._chunk + 1
        return self._media_fmt % (self._seq, chunk, (chunk - 1) * 20, payload_b64)

    def dtmf(self, digit: str) -> bytes:
        return _json(
            {
                "event": "dtmf",
                "stream_id": self.stream_id,
                "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "sequence_number": str(self._next_seq()),
                "dtmf": {"digit": digit},
            }
        )

    def mark(self, name: str) -> bytes:
        # UNVERIFIED (telephony.md 2.2): exact mark-callback field set; modelled on the other frames.
        return _json(
            {
                "event": "mark",
                "sequence_number": str(self._next_seq()),
                "stream_id": self.stream_id,
                "mark": {"name": name},
            }
        )

    def stop(self) -> bytes:
        return _json(
            {
                "event": "stop",
                "sequence_number": str(self._next_seq()),
                "stop": {"user_id": self.user_id, "call_control_id": self.call_control_id},
                "stream_id": self.stream_id,
            }
        )

    def error(self, code: str, title: str, detail: str) -> bytes | None:
        return _json(
            {
                "stream_id": self.stream_id,
                "event": "error",
                "sequence_number": str(self._next_seq()),
                "error": {"title": title, "code": code, "detail": detail},
            }
        )

    def parse(self, text: str | bytes) -> GatewayMessage:
        """``media``/``mark``/``clear``; ``stream_id`` optional (Pipecat omits it) but must match if given."""
        return _memo_parse(self.known_media, text, self._parse)

    def _parse(self, text: str | bytes) -> GatewayMessage:
        msg = _load(text)
        event = msg.get("event")
        if "stream_id" in msg and msg["stream_id"] != self.stream_id:
            raise ProtocolViolation(f"{event} message has the wrong stream_id")
        if event == "media":
            _require_keys(msg, {"event", "stream_id", "media"}, {"event", "media"}, "media")
            media = msg["media"]
            if not isinstance(media, dict) or "payload" not in media:
                raise ProtocolViolation("media needs media.payload")
            audio = _decode_payload(media["payload"])
            seconds = len(audio) / self._out_bps
            if not self.MIN_CHUNK_S - 1e-9 <= seconds <= self.MAX_CHUNK_S:
                raise ProtocolViolation(f"media chunk of {seconds * 1000:.1f} ms is outside 20 ms..30 s")
            return MediaOut(audio)
        if event == "mark":
            _require_keys(msg, {"event", "stream_id", "mark"}, {"event", "mark"}, "mark")
            return MarkOut(_mark_name(msg))
        if event == "clear":
            _require_keys(msg, {"event", "stream_id"}, {"event"}, "clear")
            return ClearOut()
        raise ProtocolViolation(f"unknown message type {event!r}")
