"""Vapi adapter: create a ``vapi.websocket`` call over REST, then bridge binary audio on its socket.

Reads ``voice_config["assistant_id"]`` (required) and ``voice_config["assistant_overrides"]``
(optional dict, sent as ``assistantOverrides``). Tools are answered from ``config["tools"]``
(tool name → static result). μ-law 8 kHz is negotiated for phone callers, so carrier audio goes
to Vapi byte-for-byte as binary frames.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from providers.base import (
    AudioFormat,
    ErrorKind,
    ProviderContext,
    ProviderError,
    ProviderEvent,
    ToolCall,
)
from providers.vapi import protocol
from providers.ws_adapter import connect_deadline, open_ws, post_json
from providers.ws_client import ProviderSocket
from providers.ws_session import RawAudioWsSession

logger = logging.getLogger(__name__)


class VapiSession(RawAudioWsSession):
    name = "vapi"

    def __init__(
        self,
        ws: ProviderSocket,
        fmt: AudioFormat,
        vapi_call_id: str,
        tools: Mapping[str, Any],
    ) -> None:
        super().__init__(ws)
        self.input_format = fmt
        self.output_format = fmt
        self.vapi_call_id = vapi_call_id
        self._tools = tools
        self._decoder = protocol.VapiDecoder()

    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        events = self._decoder.text(text)
        for event in events:
            if isinstance(event, ToolCall):
                self._answer(event)
        return events

    def _answer(self, call: ToolCall) -> None:
        if call.name in self._tools:
            call.result = self._tools[call.name]
        else:
            call.result = {"error": f"tool {call.name!r} is not configured"}
            logger.warning("vapi asked for unconfigured tool %r", call.name)
        self._send_str(protocol.tool_result_message(call.call_id, call.name, call.result))

    def _on_end(self, code: int | None, reason: str) -> ProviderEvent | None:
        return self._decoder.end_event(code, reason)

    def _goodbye(self) -> None:
        self._send_str(protocol.END_CALL_MESSAGE)


async def connect(ctx: ProviderContext) -> VapiSession:
    assistant_id = ctx.voice_config.get("assistant_id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise ProviderError(ErrorKind.CONFIG, "vapi: voice_config.assistant_id is required")
    if not ctx.api_key:
        raise ProviderError(ErrorKind.AUTH, "vapi: no API key configured")
    overrides = ctx.voice_config.get("assistant_overrides")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ProviderError(ErrorKind.CONFIG, "vapi: voice_config.assistant_overrides must be an object")
    fmt = protocol.choose_format(ctx.preferred_format)
    body = protocol.create_call_body(assistant_id, fmt, history=ctx.history, overrides=overrides)
    api_base = (ctx.base_url or protocol.API_BASE).rstrip("/")
    auth = {"Authorization": f"Bearer {ctx.api_key}"}
    async with connect_deadline("vapi", ctx.connect_timeout):
        reply = await post_json(ctx.http, "vapi", api_base + protocol.CALL_PATH, body, auth)
        try:
            url = protocol.websocket_url_from_reply(reply)
        except ValueError as exc:
            raise ProviderError(ErrorKind.PROVIDER_DOWN, f"vapi: {exc}") from None
        ws = await open_ws(url, auth if protocol.SEND_KEY_ON_WEBSOCKET else None)
    vapi_call_id = str(reply.get("id", ""))
    logger.info("vapi call %s created as %s (%s)", ctx.call_id, vapi_call_id, fmt)
    tools = ctx.config.get("tools") or {}
    return VapiSession(ws, fmt, vapi_call_id, tools if isinstance(tools, Mapping) else {})
