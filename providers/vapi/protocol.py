"""Vapi ``vapi.websocket`` transport: sans-I/O codec (no sockets here).

Documented (providers.md §5.1-5.2): ``POST {api}/call`` with a Bearer key and
``transport: {"provider": "vapi.websocket", "audioFormat": {...}}`` answers a call whose
``transport.websocketCallUrl`` carries binary audio both ways in that format; text frames are
JSON control messages; ``{"type":"end-call"}`` hangs up from our side.

Which JSON messages Vapi sends on that socket is NOT documented. Every guess about them lives in
the UNVERIFIED block below (message names, fields, the tool-result reply, the end reasons) so an
empirical capture changes one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    ToolCall,
    Transcript,
    excerpt,
)
from providers.history import history_text

API_BASE = "https://api.vapi.ai"
CALL_PATH = "/call"
TRANSPORT_PROVIDER = "vapi.websocket"
CALL_TYPE = "vapi.websocketCall"
FORMATS = {"mulaw": "mulaw", "pcm16": "pcm_s16le"}
END_CALL_MESSAGE = '{"type":"end-call"}'
HISTORY_VARIABLE = (
    "conversation_history"  # our convention: the assistant prompt may use {{conversation_history}}
)
RESUME_FIRST_MESSAGE_MODE = "assistant-speaks-first-with-model-generated-message"

# ============================ UNVERIFIED: the transport socket =====================================
# Docs show no headers on the upgrade: the URL alone is assumed to be the capability. Flip to also
# send the API key as a Bearer header.
SEND_KEY_ON_WEBSOCKET = False
# Vapi's generic client messages (OpenAPI ``ClientMessage*``), assumed to arrive flat on this
# socket ({"type": …}); a server-URL style wrapper {"message": {...}} is unwrapped too.
MSG_TRANSCRIPT = "transcript"  # {role: user|assistant, transcriptType: partial|final, transcript}
MSG_USER_INTERRUPTED = "user-interrupted"  # barge-in: flush the caller's buffered agent audio
MSG_SPEECH_UPDATE = "speech-update"  # {status: started|stopped, role, turn}: turn bookkeeping, ignored
MSG_TOOL_CALLS = "tool-calls"  # {toolCallList: [{id, type: function, function: {name, arguments}}]}
MSG_STATUS_UPDATE = "status-update"  # {status, endedReason?}; status "ended" = the call is over
MSG_HANG = "hang"  # the assistant is slow to answer: a notice, not an error
ROLE_MAP = {"user": "user", "assistant": "agent", "bot": "agent"}
NORMAL_CLOSE_CODES = frozenset({1000})


def tool_result_message(call_id: str, name: str, result: Any) -> str:
    """Our answer to a tool call: an ``add-message`` with a ``tool`` role message."""
    content = result if isinstance(result, str) else orjson.dumps(result).decode()
    return orjson.dumps(
        {
            "type": "add-message",
            "message": {"role": "tool", "tool_call_id": call_id, "name": name, "content": content},
            "triggerResponseEnabled": True,
        }
    ).decode()


def ended_reason_is_failure(reason: str) -> bool:
    """Vapi ``endedReason`` values naming a fault (``pipeline-error-…``, ``…vapifault…``)."""
    return "error" in reason or "fault" in reason


# ===================================================================================================


def choose_format(preferred: AudioFormat) -> AudioFormat:
    """The caller's own format when Vapi takes it (μ-law only at 8 kHz; PCM at any rate)."""
    if preferred.encoding == "mulaw" and preferred.sample_rate == 8000:
        return preferred
    if preferred.encoding == "pcm16":
        return preferred
    return MULAW_8000


def create_call_body(
    assistant_id: str,
    fmt: AudioFormat,
    *,
    history: Sequence[Transcript] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "assistantId": assistant_id,
        "transport": {
            "provider": TRANSPORT_PROVIDER,
            "audioFormat": {
                "format": FORMATS[fmt.encoding],
                "container": "raw",
                "sampleRate": fmt.sample_rate,
            },
        },
    }
    assistant_overrides: dict[str, Any] = dict(overrides or {})
    if history:
        variables = dict(assistant_overrides.get("variableValues") or {})
        variables[HISTORY_VARIABLE] = history_text(history)
        assistant_overrides["variableValues"] = variables
        assistant_overrides.setdefault("firstMessageMode", RESUME_FIRST_MESSAGE_MODE)
    if assistant_overrides:
        body["assistantOverrides"] = assistant_overrides
    return body


def websocket_url_from_reply(reply: Mapping[str, Any]) -> str:
    """``transport.websocketCallUrl`` of the created call; ``ValueError`` when absent."""
    transport = reply.get("transport")
    url = transport.get("websocketCallUrl") if isinstance(transport, dict) else None
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise ValueError("call reply has no transport.websocketCallUrl")
    return url


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"_raw": raw}
        return parsed if isinstance(parsed, dict) else {"_value": parsed}
    return {}


class VapiDecoder:
    """Text frames → events; remembers whether the call's end was already announced."""

    def __init__(self) -> None:
        self.ended = False

    def text(self, text: str | bytes) -> list[ProviderEvent]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [Notice("vapi_unparsable", {"text": excerpt(text)})]
        if isinstance(msg, dict) and "type" not in msg and isinstance(msg.get("message"), dict):
            msg = msg["message"]
        if not isinstance(msg, dict):
            return [Notice("vapi_unknown", {"text": excerpt(text)})]
        kind = msg.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return [Notice("vapi_unknown", {"type": kind})]
        return handler(self, msg)

    def _transcript(self, msg: dict[str, Any]) -> list[ProviderEvent]:
        role = ROLE_MAP.get(str(msg.get("role")))
        text = msg.get("transcript")
        if role is None or not isinstance(text, str):
            return []
        return [Transcript(role, text, final=msg.get("transcriptType") != "partial")]  # type: ignore[arg-type]

    def _tool_calls(self, msg: dict[str, Any]) -> list[ProviderEvent]:
        calls: list[ProviderEvent] = []
        for item in msg.get("toolCallList") or ():
            if not isinstance(item, dict):
                continue
            raw_fn = item.get("function")
            fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
            name = fn.get("name") or item.get("name")
            call_id = item.get("id")
            if isinstance(name, str) and isinstance(call_id, str):
                calls.append(ToolCall(name, call_id, _arguments(fn.get("arguments", item.get("arguments")))))
        return calls

    def _status_update(self, msg: dict[str, Any]) -> list[ProviderEvent]:
        if msg.get("status") != "ended" or self.ended:
            return [Notice("vapi_status", {"status": msg.get("status")})]
        self.ended = True
        reason = str(msg.get("endedReason") or "ended")
        if ended_reason_is_failure(reason):
            return [Failure(ErrorKind.PROVIDER_DOWN, f"vapi ended the call: {reason}")]
        return [Hangup(reason)]

    def end_event(self, code: int | None, reason: str) -> ProviderEvent | None:
        """The socket closed; None when a ``status-update`` already said how the call ended."""
        if self.ended:
            return None
        self.ended = True
        if code in NORMAL_CLOSE_CODES:
            return Hangup(reason or "provider_hangup")
        return Failure(
            ErrorKind.PROVIDER_DOWN, f"vapi closed the socket (code {code}{', ' + reason if reason else ''})"
        )


# Message type -> handler. Unbound, in one table for every decoder: a per-instance table of bound
# methods would hold the decoder in a reference cycle, freed only by a full garbage collection.
_HANDLERS: dict[str, Callable[[VapiDecoder, dict[str, Any]], list[ProviderEvent]]] = {
    MSG_TRANSCRIPT: VapiDecoder._transcript,
    MSG_USER_INTERRUPTED: lambda _decoder, _msg: [Interrupt("user_speech")],
    MSG_SPEECH_UPDATE: lambda _decoder, _msg: [],
    MSG_TOOL_CALLS: VapiDecoder._tool_calls,
    MSG_STATUS_UPDATE: VapiDecoder._status_update,
    MSG_HANG: lambda _decoder, _msg: [Notice("vapi_hang", {})],
}
