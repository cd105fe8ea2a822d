"""Deepgram Voice Agent client: a thin shell (providers/ws_client.py) around ``DeepgramCodec``.

Config: ``ctx.voice_config`` ``prompt``, ``first_message``, ``resume_message`` (greeting after a
failover), ``voice_id`` (Aura model), ``listen_model``, ``think_provider``/``think_model``,
``language``, ``speak_first`` (default True); ``ctx.config`` ``tools`` (name → static result),
``hangup_tool`` (default ``end_call``), ``audio_format`` (force e.g. ``pcm16_16000``), ``base_url``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from providers.base import Audio, AudioFormat, ErrorKind, ProviderContext, ProviderError, ProviderEvent
from providers.deepgram.protocol import (
    CONVERSE_PATH,
    DEFAULT_HANGUP_TOOL,
    DEFAULT_WS_BASE,
    KEEPALIVE,
    DeepgramCodec,
    classify_error,
    negotiate,
    settings_message,
)
from providers.ws_adapter import await_ready, connect_deadline, open_ws, ws_url_from_http
from providers.ws_client import ProviderSocket
from providers.ws_session import WsProviderSession

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL_S = 5.0  # docs say every 8 s while idle; the SDK suggests ~5 s (server gives up ~10 s)


class DeepgramSession(WsProviderSession):
    name = "deepgram"

    def __init__(self, ws: ProviderSocket, fmt: AudioFormat, ctx: ProviderContext, hangup_tool: str) -> None:
        super().__init__(ws)
        self.input_format = fmt
        self.output_format = fmt
        self.codec = DeepgramCodec(fmt, ctx.config.get("tools") or {}, hangup_tool, self.usage, ctx.playback)
        self._loop = asyncio.get_running_loop()
        self._last_sent = self._loop.time()
        self._keepalive: asyncio.Task[None] | None = self._loop.create_task(self._keep_alive())

    def send_audio_nowait(self, audio: Audio) -> bool:
        self.usage.audio_in_ms += audio.duration_ms
        self._last_sent = self._loop.time()
        self._send_audio_binary(audio.raw)
        return True

    async def _keep_alive(self) -> None:
        """One timer per session: KeepAlive only when the caller leg stopped sending audio."""
        while not self._ws.closed:
            idle = self._loop.time() - self._last_sent
            if idle >= KEEPALIVE_INTERVAL_S:
                self._last_sent = self._loop.time()
                self._send_str(KEEPALIVE)
                idle = 0.0
            await asyncio.sleep(KEEPALIVE_INTERVAL_S - idle)

    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        return (self.codec.audio(data),)

    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        codec = self.codec
        events = codec.text(text)
        if codec.outbox:
            self._send_replies(codec.outbox)
        return events

    def _stop_keep_alive(self) -> None:
        """Cancels the timer and forgets it: a cancelled task keeps its CancelledError, whose
        traceback holds this session, so keeping the task would make a cycle only a full garbage
        collection frees."""
        task, self._keepalive = self._keepalive, None
        if task is not None:
            task.cancel()

    def _on_end(self, code: int | None, reason: str) -> ProviderEvent:
        self._stop_keep_alive()
        return self.codec.on_close(code, reason)

    async def close(self) -> None:
        self._stop_keep_alive()
        await super().close()


def _refusal(message: dict[str, Any]) -> ProviderError | None:
    if message.get("type") != "Error":
        return None
    code = str(message.get("code", ""))
    description = str(message.get("description", ""))
    return ProviderError(classify_error(code, description), f"deepgram: {code}: {description}")


async def connect(ctx: ProviderContext) -> DeepgramSession:
    """Open an agent session within ``ctx.connect_timeout`` (upgrade + Settings + SettingsApplied)."""
    forced = ctx.voice_config.get("audio_format") or ctx.config.get("audio_format")
    try:
        fmt = negotiate(ctx.preferred_format, str(forced) if forced else None)
    except ValueError as exc:
        raise ProviderError(ErrorKind.CONFIG, f"deepgram: {exc}") from None
    hangup_tool = str(ctx.config.get("hangup_tool") or DEFAULT_HANGUP_TOOL)
    speak_first = ctx.voice_config.get("speak_first", ctx.config.get("speak_first", True))
    settings = settings_message(
        fmt,
        ctx.voice_config,
        ctx.agent_config,
        ctx.config.get("tools") or {},
        hangup_tool,
        ctx.history,
        bool(speak_first),
    )
    base = ws_url_from_http(ctx.base_url.rstrip("/")) if ctx.base_url else DEFAULT_WS_BASE
    headers = {"Authorization": f"Token {ctx.api_key}"} if ctx.api_key else {}
    ws = None
    try:
        async with connect_deadline("deepgram", ctx.connect_timeout):
            ws = await open_ws(base + CONVERSE_PATH, headers)
            ws.send_text(settings)
            await await_ready(ws, "deepgram", "SettingsApplied", _refusal)
    except BaseException:
        if ws is not None:
            ws.abort()
        raise
    log.info("deepgram session for call %s: %s both ways", ctx.call_id, fmt)
    return DeepgramSession(ws, fmt, ctx, hangup_tool)
