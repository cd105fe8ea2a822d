"""ElevenLabs Agents Platform WebSocket codec (sans-I/O): events ↔ wire messages, no sockets.

Wire facts (providers.md §1): all frames are text JSON; caller audio is ``{"user_audio_chunk": b64}``
with no ``type``; the session opens with ``conversation_initiation_client_data`` and the server
answers ``conversation_initiation_metadata`` carrying the agent's audio formats (they are agent
settings, not per-session options). Close codes: 1000 normal end, 1002 operational, 1008 input /
contract, 1011 internal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from providers.base import (
    MULAW_8000,
    AudioFormat,
    AudioOut,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    Notice,
    ProviderEvent,
    ToolCall,
    Transcript,
    UsageFacts,
    audio_from_b64,
)

_loads: Final = orjson.loads  # every provider message: a C static under mypyc, not a lookup

DEFAULT_HTTP_BASE = "https://api.elevenlabs.io"
CONVERSATION_PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"

FORMATS: dict[str, AudioFormat] = {
    "ulaw_8000": MULAW_8000,
    **{f"pcm_{rate}": AudioFormat("pcm16", rate) for rate in (8000, 16000, 22050, 24000, 44100, 48000)},
}
HISTORY_VARIABLE = "previous_transcript"  # dynamic variable carrying the transcript after failover
HISTORY_MAX_CHARS = 2000
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 1002
CLOSE_INVALID = 1008
CLOSE_INTERNAL = 1011


def audio_format(name: str) -> AudioFormat:
    """ElevenLabs format name (``ulaw_8000``, ``pcm_16000`` …) → AudioFormat; ValueError if unknown."""
    fmt = FORMATS.get(name)
    if fmt is None:
        raise ValueError(f"unknown ElevenLabs audio format {name!r}")
    return fmt


def format_name(fmt: AudioFormat) -> str:
    return "ulaw_8000" if fmt == MULAW_8000 else f"pcm_{fmt.sample_rate}"


def user_audio_message(b64: str) -> str:
    """The hot-path message: base64 needs no JSON escaping, so an f-string is exact and cheapest."""
    return f'{{"user_audio_chunk":"{b64}"}}'


def transcript_summary(history: Sequence[Transcript], limit: int = HISTORY_MAX_CHARS) -> str:
    """The conversation so far as ``user: …`` / ``agent: …`` lines, newest kept when over ``limit``."""
    text = "\n".join(f"{t.role}: {t.text}" for t in history if t.final and t.text)
    return text[-limit:]


def initiation_message(
    voice_config: Mapping[str, Any],
    agent_config: Mapping[str, Any],
    history: Sequence[Transcript] = (),
    speak_first: bool | None = None,
    dynamic_variables: Mapping[str, Any] | None = None,
) -> bytes:
    """``conversation_initiation_client_data`` (flat payload; overrides only when configured).

    Overrides need the agent's Security-tab permission, so nothing is overridden unless the agent
    configuration asks for it; dynamic variables need no permission and carry the history.
    """
    agent: dict[str, Any] = {}
    prompt = voice_config.get("prompt") or agent_config.get("prompt")
    if prompt:
        agent["prompt"] = {"prompt": str(prompt)}
    first_message = voice_config.get("first_message", agent_config.get("greeting"))
    if history and voice_config.get("resume_message"):
        first_message = voice_config["resume_message"]
    if speak_first is False:
        first_message = ""  # an empty first message makes the agent wait for the caller
    if first_message is not None:
        agent["first_message"] = str(first_message)
    if voice_config.get("language"):
        agent["language"] = str(voice_config["language"])
    override: dict[str, Any] = {}
    if agent:
        override["agent"] = agent
    if voice_config.get("voice_id"):
        override["tts"] = {"voice_id": str(voice_config["voice_id"])}
    variables: dict[str, Any] = dict(voice_config.get("dynamic_variables") or {})
    variables.update(dynamic_variables or {})
    if history:
        variables[HISTORY_VARIABLE] = transcript_summary(history)
    message: dict[str, Any] = {"type": "conversation_initiation_client_data"}
    if override:
        message["conversation_config_override"] = override
    if variables:
        message["dynamic_variables"] = variables
    return orjson.dumps(message)


@dataclass(frozen=True, slots=True)
class SessionStart:
    conversation_id: str
    input_format: AudioFormat
    output_format: AudioFormat


def parse_initiation_metadata(message: Mapping[str, Any]) -> SessionStart:
    """Read the negotiated formats; ValueError when the event is malformed or a format unknown."""
    meta = message.get("conversation_initiation_metadata_event")
    if not isinstance(meta, Mapping):
        raise ValueError("conversation_initiation_metadata without its event body")
    return SessionStart(
        conversation_id=str(meta.get("conversation_id", "")),
        input_format=audio_format(str(meta.get("user_input_audio_format", "pcm_16000"))),
        output_format=audio_format(str(meta.get("agent_output_audio_format", "pcm_16000"))),
    )


def classify(code: int | None, reason: str = "", error_type: str = "") -> ErrorKind:
    """Close code / error event → ErrorKind. Quota and auth are recognised from the reason text
    (quota shows up as close reason "This request exceeds your quota limit" — third-party report)."""
    text = f"{reason} {error_type}".lower()
    if "quota" in text or "concurren" in text or "credits" in text:
        return ErrorKind.QUOTA
    if "auth" in text or "signature" in text or "api key" in text or "unauthori" in text:
        return ErrorKind.AUTH
    if error_type == "transport_receive_timeout":
        return ErrorKind.RETRYABLE
    if code == CLOSE_INVALID:
        return ErrorKind.CONFIG
    return ErrorKind.PROVIDER_DOWN


def tool_answer(tools: Mapping[str, Any], name: str) -> tuple[Any, str, bool]:
    """The configured static result for ``name``: (result, result as text, is_error)."""
    if name in tools:
        result = tools[name]
        is_error = False
    else:
        result = {"error": f"unknown tool {name!r}"}
        is_error = True
    text = result if isinstance(result, str) else orjson.dumps(result).decode()
    return result, text, is_error


class ElevenLabsCodec:
    """Server messages → provider events, with replies (pong, tool results) queued in ``outbox``.

    Keeps the interruption watermark: audio whose ``event_id`` is at or below the last
    ``interruption`` belongs to the cut-off response and is dropped, as the official SDK does.
    """

    def __init__(self, output_format: AudioFormat, tools: Mapping[str, Any], usage: UsageFacts) -> None:
        self.output_format = output_format
        self.tools = tools
        self.usage = usage
        self.outbox: list[str] = []
        self.last_interrupt_id = -1
        self.error: tuple[int | None, str, str] | None = None  # (code, message, error_type)
        self.dropped_audio = 0

    def decode(self, data: bytes | str) -> ProviderEvent | None:
        try:
            message = _loads(data)
            kind = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return Notice("unparsable_message", {"provider": "elevenlabs"})
        if kind == "audio":
            return self._audio(message.get("audio_event") or {})
        if kind == "ping":
            ping = message.get("ping_event") or {}
            self.outbox.append(orjson.dumps({"type": "pong", "event_id": ping.get("event_id")}).decode())
            return None
        if kind == "interruption":
            event_id = (message.get("interruption_event") or {}).get("event_id")
            if isinstance(event_id, int):
                self.last_interrupt_id = max(self.last_interrupt_id, event_id)
            return Interrupt("user_speech")
        if kind == "agent_response":
            text = str((message.get("agent_response_event") or {}).get("agent_response", ""))
            self.usage.characters += len(text)
            return Transcript("agent", text)
        if kind == "user_transcript":
            text = str((message.get("user_transcription_event") or {}).get("user_transcript", ""))
            return Transcript("user", text)
        if kind == "client_tool_call":
            return self._tool_call(message.get("client_tool_call") or {})
        if kind == "agent_response_correction":
            body = message.get("agent_response_correction_event") or {}
            return Notice("agent_response_correction", {"text": body.get("corrected_agent_response", "")})
        if kind == "error":
            body = message.get("error_event") or {}
            code = body.get("code")
            self.error = (
                code if isinstance(code, int) else None,
                str(body.get("message") or body.get("reason") or ""),
                str(body.get("error_type") or ""),
            )
            return None  # the close that follows carries the outcome (Failure or Hangup)
        return None  # tentative transcripts, vad scores, telemetry: not needed by the gateway

    def _audio(self, body: Mapping[str, Any]) -> AudioOut | None:
        event_id = body.get("event_id")
        if isinstance(event_id, int) and event_id <= self.last_interrupt_id:
            self.dropped_audio += 1
            return None
        b64 = body.get("audio_base_64")
        if not b64:
            return None
        audio = audio_from_b64(self.output_format, b64)
        self.usage.audio_out_ms += audio.duration_ms
        return AudioOut(audio, str(event_id))

    def _tool_call(self, body: Mapping[str, Any]) -> ToolCall:
        name = str(body.get("tool_name", ""))
        call_id = str(body.get("tool_call_id", ""))
        result, text, is_error = tool_answer(self.tools, name)
        self.outbox.append(
            orjson.dumps(
                {"type": "client_tool_result", "tool_call_id": call_id, "result": text, "is_error": is_error}
            ).decode()
        )
        arguments = body.get("parameters")
        return ToolCall(name, call_id, arguments if isinstance(arguments, dict) else {}, result)

    def on_close(self, code: int | None, reason: str) -> ProviderEvent:
        """The server closed: 1000 is the agent ending the call, anything else a failure."""
        err_code, err_message, err_type = self.error or (code, reason, "")
        if code == CLOSE_NORMAL and (err_code in (None, CLOSE_NORMAL)):
            return Hangup(err_type or "agent_ended")
        message = f"closed {code}: {err_message or reason or 'no reason'}"
        return Failure(classify(err_code or code, f"{reason} {err_message}", err_type), message)
