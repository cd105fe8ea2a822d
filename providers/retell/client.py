"""Retell adapter: register the call over REST, then stream audio on Retell's legacy audio socket.

DEPRECATED: Retell retired this low-level audio WebSocket in favour of SIP and its WebRTC SDK
(providers.md §4). It still works for accounts that have it and is what a WebSocket gateway can
use; new deployments should reach Retell over a SIP leg instead. A warning is logged once per
process so operators notice.

Reads ``voice_config["agent_id"]`` (required). Audio is the caller's format when Retell supports
it (μ-law 8 kHz for phone calls), so carrier audio passes through untouched as binary frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from providers.base import (
    Audio,
    AudioFormat,
    ErrorKind,
    ProviderContext,
    ProviderError,
    ProviderEvent,
)
from providers.retell import protocol
from providers.ws_adapter import connect_deadline, open_ws, post_json, ws_url_from_http
from providers.ws_client import ProviderSocket
from providers.ws_session import RawAudioWsSession

logger = logging.getLogger(__name__)
_deprecation_logged = False


def _warn_deprecated_once() -> None:
    global _deprecation_logged
    if not _deprecation_logged:
        _deprecation_logged = True
        logger.warning(
            "DeprecationWarning: Retell's audio WebSocket is deprecated by Retell "
            "(use SIP or the web SDK); this adapter may stop working without notice"
        )


class RetellSession(RawAudioWsSession):
    name = "retell"

    def __init__(self, ws: ProviderSocket, fmt: AudioFormat, retell_call_id: str) -> None:
        super().__init__(ws)
        self.input_format = fmt
        self.output_format = fmt
        self.retell_call_id = retell_call_id
        self._decoder = protocol.RetellDecoder()
        self._next_ping = time.monotonic() + protocol.PING_INTERVAL_S

    def send_audio_nowait(self, audio: Audio) -> bool:
        super().send_audio_nowait(audio)
        # Keepalive rides on the audio stream (carriers send frames continuously): no extra task.
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + protocol.PING_INTERVAL_S
            self._send_str(protocol.PING)
        return True

    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        return self._decoder.text(text)

    def _on_end(self, code: int | None, reason: str) -> ProviderEvent:
        return protocol.end_event(code, reason)


async def connect(ctx: ProviderContext) -> RetellSession:
    _warn_deprecated_once()
    agent_id = ctx.voice_config.get("agent_id")
    if not isinstance(agent_id, str) or not agent_id:
        raise ProviderError(ErrorKind.CONFIG, "retell: voice_config.agent_id is required")
    if not ctx.api_key:
        raise ProviderError(ErrorKind.AUTH, "retell: no API key configured")
    fmt = protocol.choose_format(ctx.preferred_format)
    api_base = (ctx.base_url or protocol.API_BASE).rstrip("/")
    ws_base = ws_url_from_http(ctx.base_url.rstrip("/")) if ctx.base_url else protocol.WS_BASE
    body = protocol.register_body(
        agent_id,
        fmt,
        call_id=ctx.call_id,
        caller_number=ctx.caller_number,
        called_number=ctx.called_number,
        history=ctx.history,
    )
    async with connect_deadline("retell", ctx.connect_timeout):
        reply = await post_json(
            ctx.http,
            "retell",
            api_base + protocol.REGISTER_PATH,
            body,
            {"Authorization": f"Bearer {ctx.api_key}"},
        )
        try:
            retell_call_id = protocol.call_id_from_reply(reply, fmt)
        except ValueError as exc:
            raise ProviderError(ErrorKind.CONFIG, f"retell: {exc}") from None
        ws = await open_ws(protocol.audio_ws_url(ws_base, retell_call_id))
    logger.info("retell call %s registered as %s (%s)", ctx.call_id, retell_call_id, fmt)
    return RetellSession(ws, fmt, retell_call_id)
