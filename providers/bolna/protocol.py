"""Bolna agent WebSocket (``/chat/v1/{agent_id}``): sans-I/O codecs for its two dialects.

Bolna picks the dialect from the agent's own ``tools_config.input/output.provider``, so the
adapter must be told which one the agent uses (providers.md §6):

- ``twilio``: Bolna speaks Twilio Media Streams on this endpoint. We impersonate Twilio
  (``connected``, ``start``, ``media`` with ``timestamp``, ``mark`` echoes, ``stop``) and keep
  μ-law 8 kHz end to end: caller base64 goes out as the very same string, Bolna's comes back
  untouched. Preferred for phone calls.
- ``default`` (web): all-JSON ``{"type":"init"}`` → ``{"type":"ack"}``, base64 PCM16
  ``{"type":"audio","data":…}`` both ways (24 kHz out, the agent transcriber's rate in), marks
  around every audio chunk, ``{"type":"clear"}`` on barge-in. The session transcodes.

In both, Bolna sends marks and needs them echoed once the caller *heard* that audio: it tracks
what was heard and ends the call only when its farewell's final mark comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

from providers.base import (
    MULAW_8000,
    Audio,
    AudioFormat,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    Mark,
    Notice,
    ProviderEvent,
    Transcript,
    audio_from_b64,
    excerpt,
)

Dialect = Literal["twilio", "default"]
DIALECTS: tuple[Dialect, ...] = ("twilio", "default")
WS_PATH = "/chat/v1/"
WEB_OUTPUT_RATE = 24000  # bolna/constants.py WEBCALL_TTS_SAMPLE_RATE
WEB_INPUT_RATE = 16000  # what Bolna's quickstart client streams; the agent's transcriber decides

# --- UNVERIFIED choices (change here after a capture) -------------------------------------------
# Bolna has no hang-up message on either dialect: after the farewell's final mark is echoed it
# closes the socket, assumed with 1000; any other close is a failure.
NORMAL_CLOSE_CODES = frozenset({1000})
# Prior transcript after a failover rides in the context the dialect carries (web ``init``
# meta_data / Twilio ``start.customParameters``) under this key; the prompt must use it.
HISTORY_KEY = "conversation_history"


def end_event(code: int | None, reason: str) -> ProviderEvent:
    if code in NORMAL_CLOSE_CODES:
        return Hangup(reason or "provider_hangup")
    detail = f"bolna closed the socket (code {code}{', ' + reason if reason else ''})"
    return Failure(ErrorKind.PROVIDER_DOWN, detail)


def _loads(text: str | bytes) -> dict[str, Any] | None:
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


class TwilioDialect:
    """We play Twilio; Bolna plays the media-stream server. μ-law 8 kHz both ways."""

    input_format = MULAW_8000
    output_format = MULAW_8000

    def __init__(self, stream_sid: str, call_sid: str, custom_parameters: Mapping[str, str]) -> None:
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.custom_parameters = dict(custom_parameters)
        self._seq = 0
        self._chunk = 0
        self._timestamp_ms = 0.0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def opening(self) -> list[str]:
        """``connected`` then ``start``, exactly as Twilio opens a stream."""
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        start = {
            "event": "start",
            "sequenceNumber": str(self._next_seq()),
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.stream_sid,
        }
        return [orjson.dumps(connected).decode(), orjson.dumps(start).decode()]

    def media(self, audio: Audio) -> str:
        """Hot path: one caller frame; the carrier's base64 is reused, never re-encoded."""
        self._seq += 1
        self._chunk += 1
        timestamp = int(self._timestamp_ms)
        self._timestamp_ms += audio.duration_ms
        return (
            f'{{"event":"media","sequenceNumber":"{self._seq}","media":{{"track":"inbound",'
            f'"chunk":"{self._chunk}","timestamp":"{timestamp}","payload":"{audio.b64}"}},'
            f'"streamSid":"{self.stream_sid}"}}'
        )

    def mark(self, name: str) -> str:
        msg = {
            "event": "mark",
            "sequenceNumber": str(self._next_seq()),
            "streamSid": self.stream_sid,
            "mark": {"name": name},
        }
        return orjson.dumps(msg).decode()

    def dtmf(self, digit: str) -> str:
        msg = {
            "event": "dtmf",
            "sequenceNumber": str(self._next_seq()),
            "streamSid": self.stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
        return orjson.dumps(msg).decode()

    def stop(self) -> str:
        msg = {
            "event": "stop",
            "sequenceNumber": str(self._next_seq()),
            "streamSid": self.stream_sid,
            "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
        }
        return orjson.dumps(msg).decode()

    def decode(self, text: str | bytes) -> list[ProviderEvent]:
        msg = _loads(text)
        if msg is None:
            return [Notice("bolna_unparsable", {"text": excerpt(text)})]
        event = msg.get("event")
        if event == "media":
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if isinstance(payload, str) and payload:
                return [AudioOut(audio_from_b64(MULAW_8000, payload))]
            return []
        if event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            return [Mark(name)] if isinstance(name, str) else []
        if event == "clear":
            return [Interrupt("user_speech")]
        return [Notice("bolna_unknown", {"event": event})]

    def handshake_reply(self, text: str | bytes) -> bool:
        return True  # the Twilio dialect has no handshake reply


class WebDialect:
    """Bolna's own JSON protocol for web clients; PCM16 in at the agent's rate, 24 kHz out."""

    def __init__(self, input_rate: int, output_rate: int, meta_data: Mapping[str, Any]) -> None:
        self.input_format = AudioFormat("pcm16", input_rate)
        self.output_format = AudioFormat("pcm16", output_rate)
        self.meta_data = dict(meta_data)

    def opening(self) -> list[str]:
        return [orjson.dumps({"type": "init", "meta_data": self.meta_data}).decode()]

    def media(self, audio: Audio) -> str:
        return f'{{"type":"audio","data":"{audio.b64}"}}'

    def mark(self, name: str) -> str:
        return orjson.dumps({"type": "mark", "name": name}).decode()

    def dtmf(self, digit: str) -> str | None:
        return None  # the web dialect has no keypad input

    def stop(self) -> str | None:
        return None  # web clients just close

    def decode(self, text: str | bytes) -> list[ProviderEvent]:
        msg = _loads(text)
        if msg is None:
            return [Notice("bolna_unparsable", {"text": excerpt(text)})]
        kind = msg.get("type")
        if kind == "audio":
            data = msg.get("data")
            if isinstance(data, str) and data:
                return [AudioOut(audio_from_b64(self.output_format, data))]
            return []
        if kind == "mark":
            name = msg.get("name")
            return [Mark(name)] if isinstance(name, str) else []
        if kind == "clear":
            return [Interrupt("user_speech")]
        if kind == "text":
            data = msg.get("data")
            return [Transcript("agent", data)] if isinstance(data, str) and data else []
        if kind == "ack":
            return []
        return [Notice("bolna_unknown", {"type": kind})]

    def handshake_reply(self, text: str | bytes) -> bool:
        """True once Bolna acknowledged ``init``."""
        msg = _loads(text)
        return msg is not None and msg.get("type") == "ack"
