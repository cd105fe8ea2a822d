"""OpenAI Realtime WebSocket client: a thin shell (providers/ws_client.py) around ``OpenAICodec``.

Config: ``ctx.config`` / ``ctx.voice_config`` ``dialect`` (``ga`` default, ``beta``), ``model``,
``voice``, ``audio_format`` (force ``pcm16_24000`` to benchmark transcoding), ``tools`` (name →
static result), ``hangup_tool`` (default ``end_call``), ``speak_first`` (default True: the agent
greets via ``response.create``), ``base_url``; instructions come from ``voice_config.prompt`` or
``agent_config.prompt``, the greeting from ``first_message``/``greeting``, and ``resume_message``
after a failover (the history is replayed as conversation items).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from providers.base import Audio, AudioFormat, ErrorKind, ProviderContext, ProviderError, ProviderEvent
from providers.openai.protocol import (
    DEFAULT_HANGUP_TOOL,
    DEFAULT_MODEL,
    DEFAULT_VOICE,
    DEFAULT_WS_BASE,
    REALTIME_PATH,
    Dialect,
    OpenAICodec,
    append_message,
    classify_error,
    history_items,
    negotiate,
    response_create,
    session_update,
)
from providers.ws_adapter import await_ready, connect_deadline, open_ws, ws_url_from_http
from providers.ws_client import ProviderSocket
from providers.ws_session import WsProviderSession

log = logging.getLogger(__name__)


class OpenAISession(WsProviderSession):
    name = "openai"

    def __init__(
        self,
        ws: ProviderSocket,
        ctx: ProviderContext,
        dialect: Dialect,
        fmt: AudioFormat,
        hangup_tool: str,
    ) -> None:
        super().__init__(ws)
        self.input_format = fmt
        self.output_format = fmt
        self.dialect = dialect
        tools = ctx.config.get("tools") or {}
        self.codec = OpenAICodec(dialect, fmt, tools, hangup_tool, self.usage, ctx.playback)

    def send_audio_nowait(self, audio: Audio) -> bool:
        self.usage.audio_in_ms += audio.duration_ms
        self._send_audio(append_message(audio.b64))
        return True

    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        return ()  # the protocol is text JSON only

    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        codec = self.codec
        events = codec.decode(text)
        if codec.outbox:
            self._send_replies(codec.outbox)
        return events

    def _on_end(self, code: int | None, reason: str) -> ProviderEvent:
        return self.codec.on_close(code, reason)


def _setting(ctx: ProviderContext, key: str, default: Any = None) -> Any:
    return ctx.voice_config.get(key, ctx.config.get(key, default))


def _greeting(ctx: ProviderContext) -> bytes | None:
    """The opening ``response.create``: greet, or resume after a failover, or wait for the caller."""
    if not _setting(ctx, "speak_first", True):
        return None
    if ctx.history:
        resume = ctx.voice_config.get("resume_message")
        return response_create(f"Say exactly: {resume}") if resume else None
    text = ctx.voice_config.get("first_message") or ctx.agent_config.get("greeting")
    return response_create(f"Greet the caller by saying exactly: {text}" if text else None)


def _refusal(message: dict[str, Any]) -> ProviderError | None:
    if message.get("type") != "error":
        return None
    error: Mapping[str, Any] = message.get("error") or {}
    code, error_type = str(error.get("code") or ""), str(error.get("type") or "")
    return ProviderError(
        classify_error(code, error_type), f"openai: {code or error_type}: {error.get('message')}"
    )


async def connect(ctx: ProviderContext) -> OpenAISession:
    """Open a Realtime session within ``ctx.connect_timeout`` (upgrade + session.update + session.updated)."""
    dialect_name = str(_setting(ctx, "dialect", "ga")).lower()
    if dialect_name not in ("ga", "beta"):
        raise ProviderError(ErrorKind.CONFIG, f"openai: unknown dialect {dialect_name!r}")
    dialect: Dialect = "beta" if dialect_name == "beta" else "ga"
    forced = _setting(ctx, "audio_format")
    try:
        fmt = negotiate(ctx.preferred_format, str(forced) if forced else None)
    except ValueError as exc:
        raise ProviderError(ErrorKind.CONFIG, f"openai: {exc}") from None
    model = str(_setting(ctx, "model", DEFAULT_MODEL[dialect]))
    tools: Mapping[str, Any] = ctx.config.get("tools") or {}
    hangup_tool = str(ctx.config.get("hangup_tool") or DEFAULT_HANGUP_TOOL)
    instructions = str(ctx.voice_config.get("prompt") or ctx.agent_config.get("prompt") or "")
    voice = str(_setting(ctx, "voice", DEFAULT_VOICE[dialect]))
    setup = [
        session_update(dialect, fmt, model, instructions, voice, tools, hangup_tool),
        *history_items(dialect, ctx.history),
    ]
    greeting = _greeting(ctx)
    base = ws_url_from_http(ctx.base_url.rstrip("/")) if ctx.base_url else DEFAULT_WS_BASE
    url = f"{base}{REALTIME_PATH}?{urlencode({'model': model})}"
    headers = {"Authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else {}
    if dialect == "beta":
        headers["OpenAI-Beta"] = "realtime=v1"
    ws = None
    try:
        async with connect_deadline("openai", ctx.connect_timeout):
            ws = await open_ws(url, headers)
            for message in setup:
                ws.send_text(message)
            await await_ready(ws, "openai", "session.updated", _refusal)
            if greeting is not None:
                ws.send_text(greeting)
    except BaseException:
        if ws is not None:
            ws.abort()
        raise
    log.info("openai %s session for call %s (%s): %s both ways", dialect, ctx.call_id, model, fmt)
    return OpenAISession(ws, ctx, dialect, fmt, hangup_tool)
