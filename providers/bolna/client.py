"""Bolna adapter: one WebSocket per conversation to a (usually self-hosted) Bolna agent server.

Needs ``config.base_url`` (the Bolna host; there is no public default) and reads from
``voice_config``: ``agent_id`` (required), ``io_provider`` = the agent's configured dialect,
``"twilio"`` (default: μ-law passthrough) or ``"default"`` (web JSON, PCM16), and for the web
dialect ``input_sample_rate`` (default 16000) / ``output_sample_rate`` (default 24000).
Bolna runs tools server-side, so this protocol has no tool calls. Marks Bolna sends become
``Mark`` events; ``on_mark`` echoes them back once the caller heard the audio.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from providers.base import (
    Audio,
    AudioOut,
    ErrorKind,
    ProviderContext,
    ProviderError,
    ProviderEvent,
)
from providers.bolna import protocol
from providers.history import history_text
from providers.ws_adapter import connect_deadline, open_ws, ws_url_from_http
from providers.ws_client import ProviderSocket
from providers.ws_frames import OP_CLOSE, OP_TEXT
from providers.ws_session import WsProviderSession

logger = logging.getLogger(__name__)

DialectCodec = protocol.TwilioDialect | protocol.WebDialect


class BolnaSession(WsProviderSession):
    name = "bolna"

    def __init__(self, ws: ProviderSocket, codec: DialectCodec, early: Sequence[ProviderEvent] = ()) -> None:
        super().__init__(ws)
        self.codec = codec
        self.input_format = codec.input_format
        self.output_format = codec.output_format
        for event in early:  # events that arrived while we waited for the handshake reply
            self._feed.push(event)

    def send_audio_nowait(self, audio: Audio) -> bool:
        self.usage.audio_in_ms += audio.duration_ms
        self._send_audio(self.codec.media(audio))
        return True

    async def send_dtmf(self, digit: str) -> None:
        message = self.codec.dtmf(digit)
        if message is not None:
            self._send_str(message)

    async def on_mark(self, name: str) -> None:
        self._send_str(self.codec.mark(name))

    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        return ()  # Bolna sends text frames only

    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        events = self.codec.decode(text)
        for event in events:
            if isinstance(event, AudioOut):
                self.usage.audio_out_ms += event.audio.duration_ms
        return events

    def _on_end(self, code: int | None, reason: str) -> ProviderEvent | None:
        return protocol.end_event(code, reason)

    def _goodbye(self) -> None:
        stop = self.codec.stop()
        if stop is not None:
            self._send_str(stop)


def _codec_for(ctx: ProviderContext) -> DialectCodec:
    dialect = ctx.voice_config.get("io_provider", "twilio")
    if dialect not in protocol.DIALECTS:
        raise ProviderError(ErrorKind.CONFIG, f"bolna: io_provider must be one of {protocol.DIALECTS}")
    context = {"call_id": ctx.call_id, "caller_number": ctx.caller_number, "called_number": ctx.called_number}
    if ctx.history:
        context[protocol.HISTORY_KEY] = history_text(ctx.history)
    if dialect == "twilio":
        return protocol.TwilioDialect("MZ" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex, context)
    rates = []
    for key, default in (
        ("input_sample_rate", protocol.WEB_INPUT_RATE),
        ("output_sample_rate", protocol.WEB_OUTPUT_RATE),
    ):
        rate = ctx.voice_config.get(key, default)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
            raise ProviderError(
                ErrorKind.CONFIG, f"bolna: voice_config.{key} must be an integer in [8000, 48000]"
            )
        rates.append(rate)
    return protocol.WebDialect(rates[0], rates[1], context)


async def connect(ctx: ProviderContext) -> BolnaSession:
    agent_id = ctx.voice_config.get("agent_id")
    if not isinstance(agent_id, str) or not agent_id:
        raise ProviderError(ErrorKind.CONFIG, "bolna: voice_config.agent_id is required")
    if not ctx.base_url:
        raise ProviderError(ErrorKind.CONFIG, "bolna: config.base_url (the Bolna server) is required")
    codec = _codec_for(ctx)
    url = ws_url_from_http(ctx.base_url.rstrip("/")) + protocol.WS_PATH + agent_id
    # The open-source server has no auth; a key, when configured, goes as a Bearer header (UNVERIFIED
    # for hosted Bolna).
    headers = {"Authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else None
    early: list[ProviderEvent] = []
    async with connect_deadline("bolna", ctx.connect_timeout):
        ws = await open_ws(url, headers)
        try:
            for message in codec.opening():
                ws.send_text(message)
            if isinstance(codec, protocol.WebDialect):
                await _await_ack(ws, codec, early)
        except BaseException:
            ws.abort()
            raise
    logger.info("bolna call %s connected to agent %s (%s)", ctx.call_id, agent_id, codec.input_format)
    return BolnaSession(ws, codec, early)


async def _await_ack(ws: ProviderSocket, codec: protocol.WebDialect, early: list[ProviderEvent]) -> None:
    while True:
        opcode, data = await ws.receive()
        if opcode == OP_TEXT:
            if codec.handshake_reply(data):
                return
            early.extend(codec.decode(data))
        elif opcode == OP_CLOSE:
            code = ws.close_code
            kind = ErrorKind.CONFIG if code == 1008 else ErrorKind.PROVIDER_DOWN
            raise ProviderError(kind, f"bolna closed the socket before acknowledging init (code {code})")
