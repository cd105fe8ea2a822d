"""Deepgram Voice Agent API (V1) codec (sans-I/O): events ↔ wire messages, no sockets.

Wire facts (providers.md §2): control messages are text JSON with a PascalCase ``type``; audio is
raw binary both ways in the formats declared by ``Settings`` (the first client message, once);
``SettingsApplied`` means audio may flow. Barge-in is ``UserStartedSpeaking``. Deepgram has no
server-side hang-up: by convention the agent calls a client-side function (``end_call`` unless
``config.hangup_tool`` says otherwise), which this adapter answers and turns into ``Hangup``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
    PlaybackClock,
    ProviderEvent,
    ToolCall,
    Transcript,
    UsageFacts,
)
from providers.tools import tool_answer, tool_arguments

DEFAULT_WS_BASE = "wss://agent.deepgram.com"
CONVERSE_PATH = "/v1/agent/converse"
KEEPALIVE = '{"type":"KeepAlive"}'
DEFAULT_HANGUP_TOOL = "end_call"
DEFAULT_GREETING = "Hello! How can I help you today?"
ENCODINGS: dict[str, str] = {"mulaw": "mulaw", "alaw": "alaw", "pcm16": "linear16"}
CONFIG_ERRORS = frozenset(
    {
        "INVALID_SETTINGS",
        "UNPARSABLE_CLIENT_MESSAGE",
        "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS",
        "SETTINGS_ALREADY_APPLIED",
        "USER_AUDIO_FORMAT",
    }
)
HEARD_SLACK_MS = 20.0  # the gateway sends whole 20 ms frames: up to one frame of a turn may go uncounted
RETRYABLE_ERRORS = frozenset({"CLIENT_MESSAGE_TIMEOUT", "ASR_CONNECTION_CLOSED", "ASR_DRIVER_TIMEOUT"})


def parse_format(name: str) -> AudioFormat:
    """``mulaw_8000`` / ``alaw_8000`` / ``pcm16_16000`` → AudioFormat; ValueError otherwise."""
    encoding, _, rate = name.partition("_")
    encoding = {"ulaw": "mulaw", "linear16": "pcm16", "pcm": "pcm16"}.get(encoding, encoding)
    if encoding not in ENCODINGS or not rate.isdigit():
        raise ValueError(f"unknown audio format {name!r}")
    fmt = AudioFormat(encoding, int(rate))  # type: ignore[arg-type]
    if encoding != "pcm16" and fmt.sample_rate not in (8000, 16000):
        raise ValueError(f"Deepgram speaks {encoding} only at 8000/16000 Hz")
    return fmt


def negotiate(preferred: AudioFormat, forced: str | None) -> AudioFormat:
    """The caller's own format whenever Deepgram speaks it (μ-law/A-law 8 kHz pass through)."""
    if forced:
        return parse_format(forced)
    if preferred.encoding == "pcm16" or preferred.sample_rate in (8000, 16000):
        return preferred
    return MULAW_8000


def _audio_settings(fmt: AudioFormat, output: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"encoding": ENCODINGS[fmt.encoding], "sample_rate": int(fmt.sample_rate)}
    if output:
        body["container"] = "none"  # raw frames, no WAV header
    return body


def _function(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "description": description, "parameters": {"type": "object", "properties": {}}}


def settings_message(
    fmt: AudioFormat,
    voice_config: Mapping[str, Any],
    agent_config: Mapping[str, Any],
    tools: Mapping[str, Any],
    hangup_tool: str,
    history: Sequence[Transcript] = (),
    speak_first: bool = True,
) -> bytes:
    """The ``Settings`` message: audio formats, listen/think/speak providers, functions, greeting.

    Every configured tool is declared as a client-side function with no parameters (its answer is
    a static result), plus the hang-up function. History goes into ``agent.context.messages``.
    """
    prompt = voice_config.get("prompt") or agent_config.get("prompt") or "You are a helpful phone agent."
    listen: dict[str, Any] = {"type": "deepgram", "model": str(voice_config.get("listen_model", "nova-3"))}
    if voice_config.get("language"):
        listen["language"] = str(voice_config["language"])
    functions = [_function(name, f"Look up {name}.") for name in tools if name != hangup_tool]
    functions.append(_function(hangup_tool, "End the phone call after saying goodbye."))
    agent: dict[str, Any] = {
        "listen": {"provider": listen},
        "think": {
            "provider": {
                "type": str(voice_config.get("think_provider", "open_ai")),
                "model": str(voice_config.get("think_model", "gpt-4o-mini")),
            },
            "prompt": str(prompt),
            "functions": functions,
        },
        "speak": {
            "provider": {
                "type": "deepgram",
                "model": str(voice_config.get("voice_id") or voice_config.get("voice") or "aura-2-thalia-en"),
            }
        },
    }
    if history:
        # UNVERIFIED: context message shape {"type": "History", "role", "content"} (SDK types).
        agent["context"] = {
            "messages": [
                {"type": "History", "role": "user" if t.role == "user" else "assistant", "content": t.text}
                for t in history
                if t.final and t.text
            ]
        }
        greeting = voice_config.get("resume_message")
    else:
        greeting = voice_config.get("first_message") or agent_config.get("greeting") or DEFAULT_GREETING
    if speak_first and greeting:
        agent["greeting"] = str(greeting)
    message = {
        "type": "Settings",
        "audio": {"input": _audio_settings(fmt, False), "output": _audio_settings(fmt, True)},
        "agent": agent,
    }
    return orjson.dumps(message)


def classify_error(code: str, description: str = "") -> ErrorKind:
    text = description.lower()
    if "quota" in text or "credit" in text or "balance" in text or "concurren" in text:
        return ErrorKind.QUOTA
    if "auth" in text or "api key" in text:
        return ErrorKind.AUTH
    if code in CONFIG_ERRORS:
        return ErrorKind.CONFIG
    if code in RETRYABLE_ERRORS:
        return ErrorKind.RETRYABLE
    return ErrorKind.PROVIDER_DOWN


class DeepgramCodec:
    """Server messages → provider events; replies (function results) are queued in ``outbox``."""

    def __init__(
        self,
        output_format: AudioFormat,
        tools: Mapping[str, Any],
        hangup_tool: str,
        usage: UsageFacts,
        playback: PlaybackClock | None = None,
    ) -> None:
        self.output_format = output_format
        self.tools = tools
        self.hangup_tool = hangup_tool
        self.usage = usage
        self.outbox: list[str] = []
        self.turn = 0
        self.item_id = "agent-0"  # Deepgram has no item ids: one per agent turn, for playback tracking
        self.item_ms = 0.0  # agent audio of the current turn
        self.playback = playback  # what the caller heard (None: assume nothing, every start interrupts)
        self.agent_audio_since_user = False
        self.finished = False  # a Failure or Hangup was already reported

    def audio(self, data: bytes) -> AudioOut:
        """The hot path: one binary frame of agent audio."""
        audio = Audio(self.output_format, raw=data)
        ms = audio.duration_ms
        self.usage.audio_out_ms += ms
        self.item_ms += ms
        self.agent_audio_since_user = True
        return AudioOut(audio, self.item_id)

    def text(self, data: str | bytes) -> Sequence[ProviderEvent]:
        try:
            message = orjson.loads(data)
            kind = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return (Notice("unparsable_message", {"provider": "deepgram"}),)
        if kind == "UserStartedSpeaking":
            if self.agent_audio_since_user:
                self.agent_audio_since_user = False
                heard = self.playback.played_ms(self.item_id) if self.playback is not None else 0
                if heard + HEARD_SLACK_MS < self.item_ms:  # else a new turn: nothing left to clear
                    return (Interrupt("user_speech"),)
            return ()
        if kind == "AgentStartedSpeaking":
            self.turn += 1
            self.item_id = f"agent-{self.turn}"
            self.item_ms = 0.0
            return ()
        if kind == "AgentAudioDone":
            # A carrier mark after the turn's last audio, so the playback clock learns it was all heard.
            return (Mark(f"audio_done:{self.item_id}"),) if self.agent_audio_since_user else ()
        if kind == "ConversationText":
            text = str(message.get("content", ""))
            if message.get("role") == "user":
                return (Transcript("user", text),)
            self.usage.characters += len(text)
            return (Transcript("agent", text),)
        if kind == "FunctionCallRequest":
            return self._functions(message.get("functions") or [])
        if kind == "Error":
            code = str(message.get("code", ""))
            description = str(message.get("description", ""))
            self.finished = True
            return (Failure(classify_error(code, description), f"{code}: {description}"),)
        if kind == "Warning":
            return (
                Notice("warning", {"code": message.get("code"), "description": message.get("description")}),
            )
        return ()  # Welcome, AgentThinking, History, LatencyReport, …: tolerated

    def _functions(self, functions: list[Any]) -> Sequence[ProviderEvent]:
        events: list[ProviderEvent] = []
        for function in functions:
            if not isinstance(function, dict) or not function.get("client_side", True):
                continue  # server-side functions are run by Deepgram itself
            name = str(function.get("name", ""))
            call_id = str(function.get("id", ""))
            arguments = tool_arguments(function.get("arguments"))
            result, text = tool_answer(self.tools, name, self.hangup_tool)
            self.outbox.append(
                orjson.dumps(
                    {"type": "FunctionCallResponse", "id": call_id, "name": name, "content": text}
                ).decode()
            )
            events.append(ToolCall(name, call_id, arguments, result))
            if name == self.hangup_tool:
                self.finished = True
                events.append(Hangup("agent_end_call"))
        return events

    def on_close(self, code: int | None, reason: str) -> ProviderEvent:
        """The server closed; after a reported Error/Hangup this is only a notice."""
        if self.finished:
            return Notice("provider_closed", {"code": code, "reason": reason})
        kind = ErrorKind.RETRYABLE if code == 1000 else ErrorKind.PROVIDER_DOWN
        return Failure(kind, f"closed {code}: {reason or 'no reason'}")
