"""Retell legacy audio WebSocket, ``web`` protocol: sans-I/O codec (no sockets here).

DEPRECATED BY RETELL: the low-level audio WebSocket is superseded by SIP / the WebRTC web SDK
(providers.md §4). It is kept for accounts that still have it; the wire format is what the
last socket client and the register-call schema show (§4.1):

- ``POST {api}/v2/register-call`` (Bearer key) with ``agent_id``, ``audio_websocket_protocol``,
  ``audio_encoding`` (``s16le``|``mulaw``), ``sample_rate`` → a call object with ``call_id``.
- ``{ws}/audio-websocket/{call_id}?enable_update=true``: binary audio both ways in the registered
  format; text ``"ping"`` from us every 5 s answered by ``"pong"``; text ``"clear"`` = barge-in;
  JSON ``{"event_type":"update",…}`` transcripts and ``{"event_type":"metadata",…}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from providers.base import (
    MULAW_8000,
    AudioFormat,
    ErrorKind,
    Failure,
    Hangup,
    Interrupt,
    Notice,
    ProviderEvent,
    Transcript,
)
from providers.history import history_text

API_BASE = "https://api.retellai.com"
WS_BASE = "wss://api.retellai.com"
REGISTER_PATH = "/v2/register-call"
AUDIO_WS_PATH = "/audio-websocket/"
AUDIO_WS_QUERY = "?enable_update=true"
AUDIO_WEBSOCKET_PROTOCOL = "web"  # raw binary frames; "twilio" would be Twilio Media Streams JSON
PING_INTERVAL_S = 5.0
PING = "ping"
PONG = "pong"
CLEAR = "clear"
ENCODINGS = {"mulaw": "mulaw", "pcm16": "s16le"}
MIN_RATE, MAX_RATE = 8000, 48000

# --- UNVERIFIED choices (no capture of the live socket exists; change here after one) -------------
# Shape of update events: {"event_type":"update","transcript":[{"role":"agent"|"user","content":…}],
# "turntaking":"agent_turn"|"user_turn"}; the transcript list is cumulative.
UPDATE_EVENT = "update"
METADATA_EVENT = "metadata"
ROLE_MAP = {"agent": "agent", "user": "user"}
# ``turntaking`` names whose turn it is now; once it names the other party, the last entry is complete
# (without this the agent's last line of a call would never be final, hence never in the transcript).
TURN_OF = {"agent": "agent_turn", "user": "user_turn"}
# Retell ends a call by closing the socket normally; anything else is a failure.
NORMAL_CLOSE_CODES = frozenset({1000})
# Prior transcript after a failover goes in as a Retell LLM dynamic variable (the prompt must
# reference {{conversation_history}} to use it; other agent types ignore it).
HISTORY_VARIABLE = "conversation_history"


def choose_format(preferred: AudioFormat) -> AudioFormat:
    """Retell speaks one format both ways: the caller's own when it can, else μ-law 8 kHz."""
    if preferred.encoding == "mulaw" and preferred.sample_rate == 8000:
        return preferred
    if preferred.encoding == "pcm16" and MIN_RATE <= preferred.sample_rate <= MAX_RATE:
        return preferred
    return MULAW_8000


def register_body(
    agent_id: str,
    fmt: AudioFormat,
    *,
    call_id: str,
    caller_number: str = "",
    called_number: str = "",
    history: Sequence[Transcript] = (),
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent_id": agent_id,
        "audio_websocket_protocol": AUDIO_WEBSOCKET_PROTOCOL,
        "audio_encoding": ENCODINGS[fmt.encoding],
        "sample_rate": fmt.sample_rate,
        "metadata": {"voicegw_call_id": call_id},
    }
    if caller_number:
        body["from_number"] = caller_number
    if called_number:
        body["to_number"] = called_number
    if history:
        body["retell_llm_dynamic_variables"] = {HISTORY_VARIABLE: history_text(history)}
    return body


def call_id_from_reply(reply: Mapping[str, Any], fmt: AudioFormat) -> str:
    """The registered call id; raises ``ValueError`` when Retell registered something else."""
    call_id = reply.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise ValueError("register-call reply has no call_id")
    if reply.get("audio_encoding", ENCODINGS[fmt.encoding]) != ENCODINGS[fmt.encoding]:
        raise ValueError(f"register-call answered audio_encoding={reply.get('audio_encoding')!r}")
    if reply.get("sample_rate", fmt.sample_rate) != fmt.sample_rate:
        raise ValueError(f"register-call answered sample_rate={reply.get('sample_rate')!r}")
    return call_id


def audio_ws_url(ws_base: str, call_id: str) -> str:
    return f"{ws_base}{AUDIO_WS_PATH}{call_id}{AUDIO_WS_QUERY}"


class RetellDecoder:
    """Text frames → events. Keeps the cumulative transcript so each utterance is emitted once."""

    def __init__(self) -> None:
        self._final_count = 0  # transcript entries already emitted as final
        self._partial = ""  # text last emitted for the still-growing last entry

    def text(self, text: str | bytes) -> list[ProviderEvent]:
        if isinstance(text, bytes):  # text frames are rare here (updates, clear, pong): decode once
            text = text.decode("utf-8", "replace")
        if text == PONG:
            return []
        if text == CLEAR:
            return [Interrupt("user_speech")]
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [Notice("retell_unparsable", {"text": text[:200]})]
        if not isinstance(msg, dict):
            return [Notice("retell_unknown", {"text": text[:200]})]
        kind = msg.get("event_type")
        if kind == UPDATE_EVENT:
            return self._update(msg.get("transcript"), msg.get("turntaking"))
        if kind == METADATA_EVENT:
            return [Notice("retell_metadata", {"metadata": msg.get("metadata")})]
        return [Notice("retell_unknown", {"event_type": kind})]

    def _update(self, transcript: Any, turntaking: Any = None) -> list[ProviderEvent]:
        if not isinstance(transcript, list):
            return []
        entries = [
            (ROLE_MAP.get(str(e.get("role"))), str(e.get("content", "")))
            for e in transcript
            if isinstance(e, dict)
        ]
        events: list[ProviderEvent] = []
        # Every entry but the last is complete; the last may still grow.
        for role, content in entries[self._final_count : max(0, len(entries) - 1)]:
            if role is not None:
                events.append(Transcript(role, content, final=True))  # type: ignore[arg-type]
            self._partial = ""
        self._final_count = max(self._final_count, len(entries) - 1)
        if entries and len(entries) > self._final_count:
            role, content = entries[-1]
            turn_over = turntaking in TURN_OF.values() and turntaking != TURN_OF.get(str(role))
            if role is not None and content and turn_over:
                self._final_count = len(entries)
                self._partial = ""
                events.append(Transcript(role, content, final=True))  # type: ignore[arg-type]
            elif role is not None and content and content != self._partial:
                self._partial = content
                events.append(Transcript(role, content, final=False))  # type: ignore[arg-type]
        return events


def end_event(code: int | None, reason: str) -> ProviderEvent:
    if code in NORMAL_CLOSE_CODES:
        return Hangup(reason or "provider_hangup")
    detail = f"retell closed the socket (code {code}{', ' + reason if reason else ''})"
    return Failure(ErrorKind.PROVIDER_DOWN, detail)
