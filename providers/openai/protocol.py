"""OpenAI Realtime API codec (sans-I/O): events ↔ wire messages, no sockets, both dialects.

GA (default): ``session.update`` with ``session.type="realtime"`` and nested ``audio.input/output``
formats (``audio/pcmu``, ``audio/pcma``, ``audio/pcm`` @ 24 kHz), audio out in
``response.output_audio.delta``. Beta (``{"dialect": "beta"}``, header ``OpenAI-Beta: realtime=v1``):
flat ``input_audio_format``/``output_audio_format`` (``g711_ulaw``…), ``response.audio.delta``.
Barge-in is ``input_audio_buffer.speech_started``; the adapter answers with
``conversation.item.truncate`` at what the caller actually heard. Hang-up convention: the agent
calls the function ``end_call`` (``config.hangup_tool``), answered without ``response.create``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from providers.base import (
    ALAW_8000,
    MULAW_8000,
    PCM16_24000,
    AudioFormat,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    Mark,
    Notice,
    PlaybackClock,
    ProviderEvent,
    ToolCall,
    Transcript,
    UsageFacts,
    audio_from_b64,
)
from providers.tools import tool_answer, tool_arguments

_loads: Final = orjson.loads  # every provider message: a C static under mypyc, not a lookup

Dialect = Literal["ga", "beta"]
DEFAULT_WS_BASE = "wss://api.openai.com"
REALTIME_PATH = "/v1/realtime"
DEFAULT_MODEL: dict[Dialect, str] = {"ga": "gpt-realtime", "beta": "gpt-4o-realtime-preview"}
DEFAULT_VOICE: dict[Dialect, str] = {"ga": "marin", "beta": "alloy"}
DEFAULT_HANGUP_TOOL = "end_call"
TRANSCRIBE_MODEL = "whisper-1"
# The gateway sends the carrier whole 20 ms frames, so up to one frame of an item may go uncounted.
HEARD_SLACK_MS = 20.0
BENIGN_ERRORS = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})
AUTH_ERRORS = frozenset({"invalid_api_key", "account_deactivated"})
QUOTA_ERRORS = frozenset({"insufficient_quota", "billing_hard_limit_reached", "rate_limit_exceeded"})

GA_FORMATS: dict[AudioFormat, dict[str, Any]] = {
    MULAW_8000: {"type": "audio/pcmu"},
    ALAW_8000: {"type": "audio/pcma"},
    PCM16_24000: {"type": "audio/pcm", "rate": 24000},
}
BETA_FORMATS: dict[AudioFormat, str] = {MULAW_8000: "g711_ulaw", ALAW_8000: "g711_alaw", PCM16_24000: "pcm16"}
FORCED_NAMES: dict[str, AudioFormat] = {
    "mulaw_8000": MULAW_8000,
    "ulaw_8000": MULAW_8000,
    "alaw_8000": ALAW_8000,
    "pcm16_24000": PCM16_24000,
    "pcm16": PCM16_24000,
}


@dataclass(frozen=True, slots=True)
class EventNames:
    audio_delta: str
    audio_done: str
    transcript_done: str


EVENT_NAMES: dict[Dialect, EventNames] = {
    "ga": EventNames(
        "response.output_audio.delta", "response.output_audio.done", "response.output_audio_transcript.done"
    ),
    "beta": EventNames("response.audio.delta", "response.audio.done", "response.audio_transcript.done"),
}


def negotiate(preferred: AudioFormat, forced: str | None) -> AudioFormat:
    """G.711 passes through when the caller speaks it; anything else is PCM16 24 kHz (transcoded)."""
    if forced:
        fmt = FORCED_NAMES.get(forced.lower())
        if fmt is None:
            raise ValueError(
                f"OpenAI Realtime has no audio format {forced!r} (use mulaw_8000, alaw_8000, pcm16_24000)"
            )
        return fmt
    return preferred if preferred in (MULAW_8000, ALAW_8000) else PCM16_24000


def append_message(b64: str) -> str:
    """The hot-path message: base64 needs no JSON escaping, so an f-string is exact and cheapest."""
    return f'{{"type":"input_audio_buffer.append","audio":"{b64}"}}'


def _function(name: str, description: str) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": {}},
    }


def session_update(
    dialect: Dialect,
    fmt: AudioFormat,
    model: str,
    instructions: str,
    voice: str,
    tools: Mapping[str, Any],
    hangup_tool: str,
) -> bytes:
    """``session.update`` in the dialect's shape: formats, server VAD, transcription, tools."""
    functions = [_function(name, f"Look up {name}.") for name in tools if name != hangup_tool]
    functions.append(_function(hangup_tool, "End the phone call after saying goodbye."))
    if dialect == "ga":
        session: dict[str, Any] = {
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": GA_FORMATS[fmt],
                    "turn_detection": {"type": "server_vad"},
                    "transcription": {"model": TRANSCRIBE_MODEL},
                },
                "output": {"format": GA_FORMATS[fmt], "voice": voice},
            },
        }
    else:
        session = {
            "modalities": ["audio", "text"],
            "voice": voice,
            "input_audio_format": BETA_FORMATS[fmt],
            "output_audio_format": BETA_FORMATS[fmt],
            "turn_detection": {"type": "server_vad"},
            "input_audio_transcription": {"model": TRANSCRIBE_MODEL},
        }
    session["instructions"] = instructions
    session["tools"] = functions
    session["tool_choice"] = "auto"
    return orjson.dumps({"type": "session.update", "session": session})


def history_items(dialect: Dialect, history: Sequence[Transcript]) -> list[bytes]:
    """The transcript so far as conversation items, so a failed-over call keeps its context."""
    agent_part = "output_text" if dialect == "ga" else "text"
    items = []
    for t in history:
        if not (t.final and t.text):
            continue
        role, part = ("user", "input_text") if t.role == "user" else ("assistant", agent_part)
        item = {"type": "message", "role": role, "content": [{"type": part, "text": t.text}]}
        items.append(orjson.dumps({"type": "conversation.item.create", "item": item}))
    return items


def response_create(instructions: str | None = None) -> bytes:
    if instructions:
        return orjson.dumps({"type": "response.create", "response": {"instructions": instructions}})
    return b'{"type":"response.create"}'


def classify_error(code: str, error_type: str) -> ErrorKind:
    if code in AUTH_ERRORS or error_type == "authentication_error":
        return ErrorKind.AUTH
    if code in QUOTA_ERRORS:
        return ErrorKind.QUOTA
    if code == "session_expired":
        return ErrorKind.RETRYABLE
    if error_type == "invalid_request_error":
        return ErrorKind.CONFIG
    return ErrorKind.PROVIDER_DOWN


class OpenAICodec:
    """Server events → provider events; client replies (truncate, tool output) go to ``outbox``."""

    def __init__(
        self,
        dialect: Dialect,
        output_format: AudioFormat,
        tools: Mapping[str, Any],
        hangup_tool: str,
        usage: UsageFacts,
        playback: PlaybackClock,
    ) -> None:
        self.names = EVENT_NAMES[dialect]
        self.output_format = output_format
        self.tools = tools
        self.hangup_tool = hangup_tool
        self.usage = usage
        self.playback = playback
        self.outbox: list[bytes] = []
        self.playing_item: str | None = None  # last agent item with audio, until truncated
        self.playing_ms = 0.0  # audio generated for it so far
        self.finished = False  # a fatal Failure or Hangup was already reported
        self._truncates = 0

    def decode(self, data: str | bytes) -> Sequence[ProviderEvent]:
        try:
            message = _loads(data)
            kind = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return (Notice("unparsable_message", {"provider": "openai"}),)
        if kind == self.names.audio_delta:
            return self._audio(message)
        if kind == "input_audio_buffer.speech_started":
            return self._speech_started()
        if kind == self.names.audio_done:
            # A carrier mark after the item's last audio: once it is echoed the playback clock
            # knows the caller heard the whole item (marks otherwise come only every ~400 ms).
            item_id = message.get("item_id")
            return (Mark(f"audio_done:{item_id}"),) if item_id and item_id == self.playing_item else ()
        if kind == self.names.transcript_done:
            text = str(message.get("transcript", ""))
            self.usage.characters += len(text)
            return (Transcript("agent", text),)
        if kind == "conversation.item.input_audio_transcription.completed":
            return (Transcript("user", str(message.get("transcript", ""))),)
        if kind == "response.function_call_arguments.done":
            return self._function_call(message)
        if kind == "response.done":
            usage = (message.get("response") or {}).get("usage") or {}
            self.usage.input_tokens += int(usage.get("input_tokens") or 0)
            self.usage.output_tokens += int(usage.get("output_tokens") or 0)
            return ()
        if kind == "error":
            return self._error(message.get("error") or {})
        return ()  # session.*, response.created, *.delta text, rate_limits.updated, …: not needed

    def _audio(self, message: Mapping[str, Any]) -> Sequence[ProviderEvent]:
        item_id = message.get("item_id")
        audio = audio_from_b64(self.output_format, message["delta"])
        ms = audio.duration_ms
        self.usage.audio_out_ms += ms
        if item_id != self.playing_item:
            self.playing_item = item_id
            self.playing_ms = 0.0
        self.playing_ms += ms
        return (AudioOut(audio, item_id),)

    def _speech_started(self) -> Sequence[ProviderEvent]:
        """Barge-in: clear the caller's buffer and make the model forget what the caller never heard."""
        item_id = self.playing_item
        if item_id is None:
            return ()
        self.playing_item = None
        heard = self.playback.played_ms(item_id)
        if heard + HEARD_SLACK_MS >= self.playing_ms:
            return ()  # the caller heard it all: a new turn, not a barge-in (nothing to cut or clear)
        self._truncates += 1
        self.outbox.append(
            orjson.dumps(
                {
                    "type": "conversation.item.truncate",
                    "event_id": f"vgw_truncate_{self._truncates}",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": max(0, int(heard)),
                }
            )
        )
        return (Interrupt("user_speech"),)

    def _function_call(self, message: Mapping[str, Any]) -> Sequence[ProviderEvent]:
        name = str(message.get("name", ""))
        call_id = str(message.get("call_id", ""))
        arguments = tool_arguments(message.get("arguments"))
        result, text = tool_answer(self.tools, name, self.hangup_tool)
        item = {"type": "function_call_output", "call_id": call_id, "output": text}
        self.outbox.append(orjson.dumps({"type": "conversation.item.create", "item": item}))
        call = ToolCall(name, call_id, arguments, result)
        if name == self.hangup_tool:
            self.finished = True
            return (call, Hangup("agent_end_call"))  # no response.create: the agent has said goodbye
        self.outbox.append(response_create())
        return (call,)

    def _error(self, error: Mapping[str, Any]) -> Sequence[ProviderEvent]:
        code = str(error.get("code") or "")
        error_type = str(error.get("type") or "")
        text = str(error.get("message") or code or error_type)
        ours = str(error.get("event_id") or "").startswith("vgw_truncate_")
        if code in BENIGN_ERRORS or ours:
            return (Notice("provider_warning", {"code": code, "message": text}),)
        kind = classify_error(code, error_type)
        fatal = kind in (ErrorKind.AUTH, ErrorKind.QUOTA) or code == "session_expired"
        if fatal:
            self.finished = True
        return (Failure(kind, f"{code or error_type}: {text}", fatal=fatal),)

    def on_close(self, code: int | None, reason: str) -> ProviderEvent:
        if self.finished:
            return Notice("provider_closed", {"code": code, "reason": reason})
        kind = ErrorKind.RETRYABLE if code in (1000, 1001) else ErrorKind.PROVIDER_DOWN
        return Failure(kind, f"closed {code}: {reason or 'no reason'}")
