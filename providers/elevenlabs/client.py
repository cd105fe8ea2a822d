"""ElevenLabs Agents WebSocket client: a thin shell (providers/ws_client.py) around ``ElevenLabsCodec``.

Config (``ctx.voice_config`` first, then ``ctx.config``): ``agent_id`` (required), optional
``voice_id``, ``first_message``, ``language``, ``prompt``, ``dynamic_variables``, ``resume_message``
(first message after a failover), ``speak_first`` (False → empty first message); ``ctx.config``:
``tools`` (client tool name → static result), ``base_url``. With an API key the private-agent
signed-URL flow is used; without one the public-agent URL. Audio formats are agent settings, so
they are read back from ``conversation_initiation_metadata`` (μ-law 8 kHz agents pass through).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from providers.base import Audio, ErrorKind, ProviderContext, ProviderError, ProviderEvent
from providers.elevenlabs.protocol import (
    CONVERSATION_PATH,
    DEFAULT_HTTP_BASE,
    SIGNED_URL_PATH,
    ElevenLabsCodec,
    SessionStart,
    classify,
    initiation_message,
    parse_initiation_metadata,
    user_audio_message,
)
from providers.ws_adapter import connect_deadline, kind_for_status, open_ws, ws_url_from_http
from providers.ws_client import ProviderSocket
from providers.ws_frames import OP_BINARY, OP_TEXT
from providers.ws_session import WsProviderSession

log = logging.getLogger(__name__)


class ElevenLabsSession(WsProviderSession):
    name = "elevenlabs"

    def __init__(self, ws: ProviderSocket, start: SessionStart, ctx: ProviderContext) -> None:
        super().__init__(ws)
        self.input_format = start.input_format
        self.output_format = start.output_format
        self.conversation_id = start.conversation_id
        self.codec = ElevenLabsCodec(start.output_format, ctx.config.get("tools") or {}, self.usage)

    def send_audio_nowait(self, audio: Audio) -> bool:
        self.usage.audio_in_ms += audio.duration_ms
        self._send_audio(user_audio_message(audio.b64))
        return True

    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        return ()  # the contract defines text frames only

    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        codec = self.codec
        event = codec.decode(text)
        if codec.outbox:
            self._send_replies(codec.outbox)
        return () if event is None else (event,)

    def _on_end(self, code: int | None, reason: str) -> ProviderEvent:
        return self.codec.on_close(code, reason)


async def _signed_url(ctx: ProviderContext, http_base: str, agent_id: str) -> str:
    assert ctx.api_key is not None
    url = f"{http_base}{SIGNED_URL_PATH}"
    async with ctx.http.get(url, params={"agent_id": agent_id}, headers={"xi-api-key": ctx.api_key}) as resp:
        raw = await resp.read()
        if resp.status != 200:
            detail = raw[:200].decode("utf-8", "replace")
            raise ProviderError(
                kind_for_status(resp.status), f"elevenlabs: get-signed-url HTTP {resp.status}: {detail}"
            )
    try:
        signed = orjson.loads(raw).get("signed_url")
    except (orjson.JSONDecodeError, AttributeError):
        signed = None
    if not signed:
        raise ProviderError(ErrorKind.PROVIDER_DOWN, "elevenlabs: get-signed-url answered without signed_url")
    return str(signed)  # opaque: used exactly as returned


async def _await_metadata(ws: ProviderSocket) -> SessionStart:
    """Read until ``conversation_initiation_metadata``; a close before it is a classified error."""
    error_text = ""
    error_type = ""
    while True:
        opcode, data = await ws.receive()
        if opcode == OP_BINARY:
            continue
        if opcode != OP_TEXT:
            code = ws.close_code
            reason = ws.close_reason
            raise ProviderError(
                classify(code, f"{reason} {error_text}", error_type),
                f"elevenlabs: closed {code} before session start: {error_text or reason or 'no reason'}",
            )
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "conversation_initiation_metadata":
            try:
                return parse_initiation_metadata(message)
            except ValueError as exc:
                raise ProviderError(ErrorKind.CONFIG, f"elevenlabs: {exc}") from None
        if kind == "error":
            body = message.get("error_event") or {}
            error_text = str(body.get("message") or body.get("reason") or "")
            error_type = str(body.get("error_type") or "")
        elif kind == "ping":
            event_id = (message.get("ping_event") or {}).get("event_id")
            ws.send_text(orjson.dumps({"type": "pong", "event_id": event_id}))


async def connect(ctx: ProviderContext) -> ElevenLabsSession:
    """Open a conversation within ``ctx.connect_timeout`` (REST + upgrade + initiation metadata)."""
    agent_id = ctx.voice_config.get("agent_id") or ctx.config.get("agent_id")
    if not agent_id:
        raise ProviderError(ErrorKind.CONFIG, "elevenlabs: no agent_id in voice_config/config")
    http_base = (ctx.base_url or DEFAULT_HTTP_BASE).rstrip("/")
    speak_first: Any = ctx.voice_config.get("speak_first", ctx.config.get("speak_first"))
    first = initiation_message(ctx.voice_config, ctx.agent_config, ctx.history, speak_first)
    ws = None
    try:
        async with connect_deadline("elevenlabs", ctx.connect_timeout):
            if ctx.api_key:
                url = await _signed_url(ctx, http_base, str(agent_id))
            else:
                url = f"{ws_url_from_http(http_base)}{CONVERSATION_PATH}?{urlencode({'agent_id': agent_id})}"
            ws = await open_ws(url)
            ws.send_text(first)
            start = await _await_metadata(ws)
    except BaseException:
        if ws is not None:
            ws.abort()
        raise
    log.info(
        "elevenlabs conversation %s for call %s: in %s, out %s",
        start.conversation_id,
        ctx.call_id,
        start.input_format,
        start.output_format,
    )
    return ElevenLabsSession(ws, start, ctx)
