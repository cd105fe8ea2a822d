"""Telnyx media streaming (bidirectional RTP mode) as a sans-I/O codec.

Inbound order as for Twilio: ``connected`` (optional, once) -> ``start`` (once, top-level
``stream_id``) -> ``media`` / ``dtmf`` / ``mark`` / ``error`` -> ``stop``. The inbound codec is
whatever ``start.media_format`` says (PCMU, PCMA or L16): decoding PCMA as PCMU is the classic
"static for the whole call" bug. Outbound audio is PCMU, as our TeXML sets
``bidirectionalCodec="PCMU"``; Telnyx does not echo that choice anywhere.

Telnyx does not guarantee frame order. We forward frames as they arrive (reordering would
need a jitter buffer and add latency) and only count late frames in ``late_frames``.
Telnyx's docs show ``stream_id`` on media/start/stop but not on every frame kind, so it is
checked whenever present and tolerated when absent.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from gateway.audio import l16be_to_pcm16
from gateway.carriers.base import (
    CLOSE_MALFORMED,
    CLOSE_OUT_OF_ORDER,
    CLOSE_UNSUPPORTED_FORMAT,
    CLOSE_WRONG_STREAM,
    CarrierError,
    CarrierEvent,
    Media,
    ProtocolViolation,
    Start,
    StreamLifecycle,
    StreamPhase,
    clip,
    decode_payload,
    optional_counter,
    optional_str,
    require_dict,
    require_started,
    require_str,
    string_map,
)
from providers.base import ALAW_8000, MULAW_8000, Audio, AudioFormat

_loads: Final = orjson.loads  # a C static under mypyc, not a module attribute looked up per frame

# UNVERIFIED: Telnyx's L16 byte order. Telnyx's own pages do not say, and reports conflict; we follow
# RFC 2586 (network order, big-endian), as pipecat's Telnyx serializer now does on its main branch
# (it byte-swaps L16 both ways; proposed in pipecat#3383, seen 2026-12-07). Set to False to treat L16
# as little-endian PCM16.
L16_BIG_ENDIAN = True  # not Final: compiled code (setup.py) then reads it at run time, so it can be switched

# UNVERIFIED: whether Telnyx accepts/requires ``stream_id`` on frames we send. Pipecat omits it
# in production and the reference's outbound shapes have none.
SEND_STREAM_ID: Final = False

# Telnyx plays RTP chunks of 20 ms to 30 s; shorter chunks must be batched by the sender.
MIN_OUTBOUND_MS: Final = 20

_G711_FORMATS: Final = {
    "PCMU": MULAW_8000,
    "audio/x-mulaw": MULAW_8000,  # older Telnyx docs spelled it like Twilio
    "PCMA": ALAW_8000,
    "audio/x-alaw": ALAW_8000,
}
_L16_RATES: Final = frozenset({8000, 16000, 22050, 24000, 48000})


class TelnyxStream(StreamLifecycle):
    """One Telnyx media socket: ``receive`` parses inbound frames, ``*_message`` build outbound."""

    outbound_format: AudioFormat = MULAW_8000

    def __init__(self) -> None:
        self.stream_id: str | None = None
        self.call_ref: str | None = None
        self.media_format: AudioFormat | None = None
        self.late_frames = 0
        self._phase = StreamPhase.NEW
        self._media_tail = b'"}}'  # a media message after its payload; set at start, as _dumps would
        self._l16 = False
        self._last_chunk = -1

    # -- inbound ---------------------------------------------------------------------------

    def receive(self, text: str | bytes) -> CarrierEvent:
        try:
            msg = _loads(text)
        except orjson.JSONDecodeError:
            raise ProtocolViolation(CLOSE_MALFORMED, "frame is not JSON") from None
        if type(msg) is not dict:
            raise ProtocolViolation(CLOSE_MALFORMED, "frame is not a JSON object")
        event = msg.get("event")
        if event == "media":
            self._check_started(msg, "media")
            return self._media(require_dict(msg, "media"))
        if event == "error":
            if self._phase is StreamPhase.STOPPED:
                raise ProtocolViolation(CLOSE_OUT_OF_ORDER, "error after stop")
            self._check_stream_id(msg)
            error = require_dict(msg, "error")
            code = error.get("code")
            if type(code) is int:
                code = str(code)
            if type(code) is not str:
                raise ProtocolViolation(CLOSE_MALFORMED, "error.code must be a string")
            return CarrierError(code, optional_str(error, "title"), optional_str(error, "detail"))
        if event == "start":
            return self._start(msg)
        return self._lifecycle(msg, event)

    def _media(self, media: dict[str, Any]) -> Media:
        track = media.get("track")
        if track is not None and track != "inbound":
            raise ProtocolViolation(CLOSE_MALFORMED, f"unexpected media track {clip(track)}")
        fmt = self.media_format
        assert fmt is not None  # set by start
        payload, raw = decode_payload(media, fmt.sample_width)
        if self._l16 and L16_BIG_ENDIAN:
            audio = Audio(fmt, raw=l16be_to_pcm16(raw))
        else:
            audio = Audio(fmt, raw=raw, b64=payload)
        chunk = optional_counter(media, "chunk")
        if chunk is not None:
            if chunk <= self._last_chunk:
                self.late_frames += 1
            else:
                self._last_chunk = chunk
        return Media(audio, chunk, optional_counter(media, "timestamp"))

    def _check_started(self, msg: dict[str, Any], event: str) -> None:
        require_started(self._phase, event)
        self._check_stream_id(msg)

    def _check_stream_id(self, msg: dict[str, Any]) -> None:
        sid = msg.get("stream_id")
        if sid is not None and self.stream_id is not None and sid != self.stream_id:
            raise ProtocolViolation(CLOSE_WRONG_STREAM, f"wrong stream_id {clip(sid)}")

    def _start(self, msg: dict[str, Any]) -> Start:
        if self._phase not in (StreamPhase.NEW, StreamPhase.CONNECTED):
            raise ProtocolViolation(CLOSE_OUT_OF_ORDER, "second start")
        stream_id = require_str(msg, "stream_id")
        start = require_dict(msg, "start")
        call_control_id = require_str(start, "call_control_id")
        fmt = _inbound_format(require_dict(start, "media_format"))
        params = string_map(start, "custom_parameters")
        self.stream_id = stream_id
        if SEND_STREAM_ID:
            self._media_tail = b'"},"stream_id":' + orjson.dumps(stream_id) + b"}"
        self.call_ref = call_control_id
        self.media_format = fmt
        self._l16 = fmt.encoding == "pcm16"
        self._phase = StreamPhase.STARTED
        return Start(
            stream_id=stream_id,
            call_ref=call_control_id,
            custom_parameters=params,
            media_format=fmt,
            account_id=optional_str(start, "user_id"),
            from_number=optional_str(start, "from"),
            to_number=optional_str(start, "to"),
        )

    # -- outbound --------------------------------------------------------------------------

    def media_message(self, audio: Audio) -> bytes:
        """``audio`` must be PCMU 8 kHz, at least ``MIN_OUTBOUND_MS`` long (sender's duty).

        The bytes ``_dumps`` gives for ``{"event": "media", "media": {"payload"}}``, put together
        around the base64 text (which never needs JSON escapes): no dicts, no dump per frame."""
        if audio.fmt is not MULAW_8000 and audio.fmt != MULAW_8000:
            raise ValueError(f"our TeXML asks Telnyx for PCMU/8000 playback, got {audio.fmt}")
        return b'{"event":"media","media":{"payload":"' + audio.b64.encode() + self._media_tail

    def mark_message(self, name: str) -> bytes:
        return self._dumps({"event": "mark", "mark": {"name": name}})

    def clear_message(self) -> bytes:
        return self._dumps({"event": "clear"})

    def _dumps(self, msg: dict[str, Any]) -> bytes:
        if SEND_STREAM_ID and self.stream_id is not None:
            msg["stream_id"] = self.stream_id
        return orjson.dumps(msg)


def _inbound_format(media_format: dict[str, Any]) -> AudioFormat:
    encoding = media_format.get("encoding")
    rate = media_format.get("sample_rate")
    channels = media_format.get("channels", 1)
    if type(rate) is not int or channels != 1:
        raise ProtocolViolation(CLOSE_MALFORMED, "media_format needs an integer sample_rate and 1 channel")
    if type(encoding) is str and encoding in _G711_FORMATS:
        if rate != 8000:
            raise ProtocolViolation(CLOSE_UNSUPPORTED_FORMAT, f"G.711 at {rate} Hz")
        return _G711_FORMATS[encoding]
    if encoding == "L16" and rate in _L16_RATES:
        return AudioFormat("pcm16", rate)
    raise ProtocolViolation(
        CLOSE_UNSUPPORTED_FORMAT, f"unsupported encoding {clip(encoding)} at {clip(rate)}"
    )
