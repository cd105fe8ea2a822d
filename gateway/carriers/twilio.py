"""Twilio Media Streams (bidirectional ``<Connect><Stream>``) as a sans-I/O codec.

Inbound order: ``connected`` (optional for us, at most once) -> ``start`` (once) -> ``media`` /
``dtmf`` / ``mark`` echoes -> ``stop``. Every frame after ``start`` must carry the stream's
``streamSid``. ``sequenceNumber``, ``media.chunk`` and ``media.timestamp`` are not read: Twilio
sends one stream over one TCP connection, so frames arrive in order, and checking counters nothing
uses cost ~4 % of a relayed frame's instructions (Telnyx, which documents out-of-order frames,
keeps its ``chunk``). Outbound we send only the three documented shapes, with no extra fields:
Twilio flags extra fields and wrong SIDs as warning 31951 and ignores the message.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from gateway.carriers.base import (
    CLOSE_MALFORMED,
    CLOSE_OUT_OF_ORDER,
    CLOSE_UNSUPPORTED_FORMAT,
    CLOSE_WRONG_STREAM,
    CarrierEvent,
    Media,
    ProtocolViolation,
    Start,
    StreamLifecycle,
    StreamPhase,
    clip,
    decode_payload,
    require_dict,
    require_started,
    require_str,
    string_map,
)
from providers.base import MULAW_8000, Audio, AudioFormat

_loads: Final = orjson.loads  # a C static under mypyc, not a module attribute looked up per frame

# Twilio's ``start`` has no caller/callee numbers; our TwiML passes them as <Parameter>s.
PARAM_FROM_NUMBER: Final = "from_number"
PARAM_TO_NUMBER: Final = "to_number"


class TwilioStream(StreamLifecycle):
    """One Twilio media socket: ``receive`` parses inbound frames, ``*_message`` build outbound."""

    outbound_format: AudioFormat = MULAW_8000

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_ref: str | None = None
        self.media_format: AudioFormat | None = None
        self._phase = StreamPhase.NEW
        self._media_head: bytes | None = None  # a media message up to its payload, set at start

    # -- inbound ---------------------------------------------------------------------------

    def receive(self, text: str | bytes) -> CarrierEvent:
        try:
            msg = _loads(text)
        except orjson.JSONDecodeError:
            raise ProtocolViolation(CLOSE_MALFORMED, "frame is not JSON") from None
        if type(msg) is not dict:
            raise ProtocolViolation(CLOSE_MALFORMED, "frame is not a JSON object")
        event = msg.get("event")
        if event == "media":  # the hot path first
            self._check_started(msg, "media")
            media = require_dict(msg, "media")
            track = media.get("track")
            if track is not None and track != "inbound":
                raise ProtocolViolation(CLOSE_MALFORMED, f"unexpected media track {clip(track)}")
            payload, raw = decode_payload(media, 1)
            return Media(Audio(MULAW_8000, raw=raw, b64=payload))
        if event == "start":
            return self._start(msg)
        return self._lifecycle(msg, event)

    def _check_started(self, msg: dict[str, Any], event: str) -> None:
        require_started(self._phase, event)
        sid = msg.get("streamSid")
        if sid != self.stream_id:
            if sid is None:
                raise ProtocolViolation(CLOSE_MALFORMED, "streamSid missing")
            raise ProtocolViolation(CLOSE_WRONG_STREAM, f"wrong streamSid {clip(sid)}")

    def _start(self, msg: dict[str, Any]) -> Start:
        if self._phase not in (StreamPhase.NEW, StreamPhase.CONNECTED):
            raise ProtocolViolation(CLOSE_OUT_OF_ORDER, "second start")
        start = require_dict(msg, "start")
        stream_sid = require_str(start, "streamSid")
        outer_sid = msg.get("streamSid")
        if outer_sid != stream_sid:
            if outer_sid is None:
                raise ProtocolViolation(CLOSE_MALFORMED, "streamSid missing")
            raise ProtocolViolation(CLOSE_WRONG_STREAM, "streamSid differs from start.streamSid")
        call_sid = require_str(start, "callSid")
        account_sid = require_str(start, "accountSid")
        media_format = require_dict(start, "mediaFormat")
        if (
            media_format.get("encoding") != "audio/x-mulaw"
            or media_format.get("sampleRate") != 8000
            or media_format.get("channels") != 1
        ):
            raise ProtocolViolation(
                CLOSE_UNSUPPORTED_FORMAT, f"unsupported mediaFormat {clip(media_format, 60)}"
            )
        params = string_map(start, "customParameters")
        self.stream_id = stream_sid
        self._media_head = (
            b'{"event":"media","streamSid":' + orjson.dumps(stream_sid) + b',"media":{"payload":"'
        )
        self.call_ref = call_sid
        self.media_format = MULAW_8000
        self._phase = StreamPhase.STARTED
        return Start(
            stream_id=stream_sid,
            call_ref=call_sid,
            custom_parameters=params,
            media_format=MULAW_8000,
            account_id=account_sid,
            from_number=params.get(PARAM_FROM_NUMBER, ""),
            to_number=params.get(PARAM_TO_NUMBER, ""),
        )

    # -- outbound --------------------------------------------------------------------------

    def media_message(self, audio: Audio) -> bytes:
        """``audio`` must be mu-law 8 kHz; its base64 text is reused (no encode on passthrough).

        The same bytes ``orjson.dumps`` gives for ``{"event", "streamSid", "media": {"payload"}}``,
        put together from the head made at start: base64 text never needs JSON escapes, and the
        two dicts and the dump cost more than the rest of the outbound frame."""
        if audio.fmt is not MULAW_8000 and audio.fmt != MULAW_8000:
            raise ValueError(f"Twilio plays mulaw/8000 only, got {audio.fmt}")
        head = self._media_head
        if head is None:
            raise RuntimeError("no Twilio stream yet: send only after start")
        return head + audio.b64.encode() + b'"}}'

    def mark_message(self, name: str) -> bytes:
        return orjson.dumps({"event": "mark", "streamSid": self._sid(), "mark": {"name": name}})

    def clear_message(self) -> bytes:
        return orjson.dumps({"event": "clear", "streamSid": self._sid()})

    def _sid(self) -> str:
        if self.stream_id is None:
            raise RuntimeError("no Twilio stream yet: send only after start")
        return self.stream_id
