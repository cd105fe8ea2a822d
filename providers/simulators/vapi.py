"""Vapi simulator: ``POST /call`` with the ``vapi.websocket`` transport and the call's audio socket.

Strict on what Vapi documents (Bearer key, ``assistantId``/``assistant``, no phone number with this
transport, ``audioFormat`` fields and ranges, μ-law only at 8 kHz, one socket per created call)
and on JSON well-formedness. The control messages it sends are the ASSUMPTION recorded in
``providers.vapi.protocol`` (speech-update, transcript, user-interrupted, tool-calls,
status-update); tests that rely on them test that assumption, not Vapi.
``assistantOverrides.firstMessageMode = "assistant-waits-for-user"`` makes the call caller-first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from providers.base import AudioFormat
from providers.simulators.base import SimulatorServer
from providers.simulators.scripted_agent import (
    ABNORMAL_CLOSE,
    Script,
    ScriptedSession,
    SessionRecord,
    to_pcm16,
)
from providers.vapi import protocol

CLOSE_INVALID_JSON = 1007  # UNVERIFIED: what Vapi does with a malformed text frame
CLOSE_INTERNAL = 1011
_FORMATS = {"mulaw": "mulaw", "pcm_s16le": "pcm16"}
_CALL_FIELDS = {"assistantId", "assistant", "assistantOverrides", "transport", "name", "metadata", "customer"}
_FIRST_MESSAGE_MODES = {
    "assistant-speaks-first",
    "assistant-waits-for-user",
    "assistant-speaks-first-with-model-generated-message",
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"message": message, "error": "Bad Request", "statusCode": status}, status=status
    )


class VapiSimulator(SimulatorServer):
    name = "vapi"

    def __init__(self, api_key: str = "sim-vapi-key", assistants: tuple[str, ...] = ("asst_sim",)) -> None:
        super().__init__()
        self.api_key = api_key
        self.assistants = set(assistants)
        self.script = Script()
        self.calls: list[dict[str, Any]] = []  # every accepted create-call body
        self.records: list[SessionRecord] = []
        self._pending: dict[str, tuple[dict[str, Any], AudioFormat]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(protocol.CALL_PATH, self._create_call),
            web.get("/{call_id}/transport", self._socket),
        ]

    async def _create_call(self, request: web.Request) -> web.Response:
        if self.faults.handshake_delay_s:
            await asyncio.sleep(self.faults.handshake_delay_s)
        if self.faults.refuse_handshake:
            return _error(self.faults.refuse_status, "refused by fault injection")
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(
                401, "Invalid Key. Hot tip, you may be using the private key instead of the public key"
            )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        problem = self._validate(body)
        if problem:
            return _error(400, problem)
        fmt_spec = body["transport"].get("audioFormat") or {}
        fmt = AudioFormat(
            _FORMATS[fmt_spec.get("format", "pcm_s16le")],  # type: ignore[arg-type]
            fmt_spec.get("sampleRate", 16000),
        )
        call_id = str(uuid.uuid4())
        self.calls.append(body)
        self._pending[call_id] = (body, fmt)
        reply = {
            "id": call_id,
            "assistantId": body.get("assistantId"),
            "type": protocol.CALL_TYPE,
            "status": "queued",
            "cost": 0,
            "transport": {
                "provider": protocol.TRANSPORT_PROVIDER,
                "websocketCallUrl": f"{self.ws_url}/{call_id}/transport",
            },
        }
        return web.json_response(reply, status=201)

    def _validate(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body must be a JSON object"
        extra = set(body) - _CALL_FIELDS
        if extra:
            return f"property {sorted(extra)[0]} should not exist"
        if "phoneNumber" in body or "phoneNumberId" in body:
            return "phoneNumber is not allowed with the vapi.websocket transport"
        if "assistantId" in body:
            if body["assistantId"] not in self.assistants:
                return f"Couldn't Get Assistant. `assistantId` {body['assistantId']} Does Not Exist."
        elif not isinstance(body.get("assistant"), dict):
            return "assistantId or assistant is required"
        overrides = body.get("assistantOverrides", {})
        if not isinstance(overrides, dict):
            return "assistantOverrides must be an object"
        if overrides.get("firstMessageMode", "assistant-speaks-first") not in _FIRST_MESSAGE_MODES:
            return "assistantOverrides.firstMessageMode must be a valid enum value"
        transport = body.get("transport")
        if not isinstance(transport, dict) or transport.get("provider") != protocol.TRANSPORT_PROVIDER:
            return "transport.provider must be vapi.websocket"
        fmt = transport.get("audioFormat", {})
        if not isinstance(fmt, dict):
            return "transport.audioFormat must be an object"
        if fmt.get("format", "pcm_s16le") not in _FORMATS:
            return "transport.audioFormat.format must be one of pcm_s16le, mulaw"
        if fmt.get("container", "raw") != "raw":
            return "transport.audioFormat.container must be raw"
        rate = fmt.get("sampleRate", 16000)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 0 < rate <= 192000:
            return "transport.audioFormat.sampleRate must be an integer in (0, 192000]"
        if fmt.get("format") == "mulaw" and rate != 8000:
            return "mulaw audio requires sampleRate 8000"
        return None

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        pending = self._pending.pop(request.match_info["call_id"], None)
        if pending is None:
            return web.json_response({"message": "call not found"}, status=404)
        body, fmt = pending
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        script = self.script
        if body.get("assistantOverrides", {}).get("firstMessageMode") == "assistant-waits-for-user":
            script = dataclasses.replace(script, greeting_first=False)
        session = _VapiSession(self, script, ws, fmt)
        session.record.handshake = {
            "call": body,
            "headers": {"authorization": "Authorization" in request.headers},
        }
        self.records.append(session.record)
        await session.run(ws)
        return ws


class _VapiSession(ScriptedSession):
    def __init__(
        self, sim: VapiSimulator, script: Script, ws: web.WebSocketResponse, fmt: AudioFormat
    ) -> None:
        super().__init__(sim, script, fmt, fmt)
        self.ws = ws
        self.turn = 0
        self._tool_answers: dict[str, asyncio.Future[Any]] = {}

    async def serve(self) -> None:
        width = self.in_fmt.sample_width
        async for msg in self.ws:
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                if len(data) % width:
                    self.record.violations.append(f"audio frame of {len(data)} bytes is not whole samples")
                    continue
                self.record.audio_frames += 1
                self.record.audio_bytes += len(data)
                await self.hear(to_pcm16(data, self.in_fmt))
            elif msg.type is WSMsgType.TEXT:
                try:
                    control = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    self.record.violations.append(f"invalid JSON {msg.data[:60]!r}")
                    await self.ws.close(code=CLOSE_INVALID_JSON, message=b"invalid JSON")
                    return
                self.record.messages.append(control)
                if not await self._control(control):
                    return
        if self.record.ended_by is None:
            self.record.ended_by = "client"

    async def _control(self, msg: Any) -> bool:
        """Handle one control message; False when it ended the call."""
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind in ("end-call", "hangup"):  # "hangup" per the older doc revision
            self.ended = True
            self.record.ended_by = "client"
            await self._send(
                {"type": "status-update", "status": "ended", "endedReason": "customer-ended-call"}
            )
            await self.ws.close(code=1000)
            return False
        if kind == "add-message":
            message = msg.get("message")
            if isinstance(message, dict) and message.get("role") == "tool":
                self.record.tool_results.append(message)
                future = self._tool_answers.pop(str(message.get("tool_call_id")), None)
                if future is not None and not future.done():
                    future.set_result(message.get("content"))
            return True
        if kind not in ("control", "say", "transfer", "send-transport-message", "add-message"):
            self.record.violations.append(f"unknown control message type {kind!r}")
        return True

    async def _send(self, msg: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(orjson.dumps(msg).decode())

    async def send_agent_audio(self, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(data)

    async def on_caller_speech_start(self) -> None:
        await self._send({"type": "speech-update", "status": "started", "role": "user", "turn": self.turn})

    async def on_user_turn(self, n: int, speech_ms: float) -> None:
        await self._send({"type": "speech-update", "status": "stopped", "role": "user", "turn": self.turn})
        await self._send(
            {
                "type": "transcript",
                "role": "user",
                "transcriptType": "final",
                "transcript": f"utterance {n} ({speech_ms:.0f} ms)",
            }
        )

    async def on_agent_turn(self, n: int, text: str) -> None:
        self.turn += 1
        await self._send(
            {"type": "speech-update", "status": "started", "role": "assistant", "turn": self.turn}
        )
        await self._send(
            {"type": "transcript", "role": "assistant", "transcriptType": "final", "transcript": text}
        )

    async def on_agent_done(self, n: int) -> None:
        await self._send(
            {"type": "speech-update", "status": "stopped", "role": "assistant", "turn": self.turn}
        )

    async def send_interrupt(self) -> None:
        await self._send({"type": "user-interrupted", "turnId": str(self.turn)})

    async def invoke_tool(self, name: str, arguments: dict[str, Any]) -> None:
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._tool_answers[call_id] = future
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        await self._send(
            {
                "type": "tool-calls",
                "toolCallList": [call],
                "toolWithToolCallList": [{"type": "function", "function": {"name": name}, "toolCall": call}],
            }
        )
        try:
            await asyncio.wait_for(future, self.script.tool_timeout_s)
        except TimeoutError:
            self.record.violations.append(f"no tool result for {call_id}")

    async def end_call(self, reason: str) -> None:
        await self._send({"type": "status-update", "status": "ended", "endedReason": reason})
        await self.ws.close(code=1000)

    async def send_error(self) -> None:
        await self._send(
            {"type": "status-update", "status": "ended", "endedReason": "pipeline-error-openai-llm-failed"}
        )
        await self.ws.close(code=CLOSE_INTERNAL)

    async def drop(self, code: int | None) -> None:
        if code == ABNORMAL_CLOSE and self.abort_connection():
            return
        await self.ws.close(code=code or CLOSE_INTERNAL)
