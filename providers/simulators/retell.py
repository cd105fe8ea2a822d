"""Retell simulator: ``POST /v2/register-call`` plus the legacy ``/audio-websocket/{call_id}`` socket.

Strict where Retell's schema is explicit (Bearer key, required register fields, encodings, the
8-48 kHz range, μ-law only at 8 kHz, one socket per registered call) and faithful to the ``web``
protocol: binary audio both ways, text ``ping``→``pong``, ``clear`` on barge-in, JSON ``update``
events (cumulative transcript) when ``enable_update=true``. Retell has no tool calls on this
socket (tools run inside Retell), so ``Script.tool_after`` is ignored. UNVERIFIED details follow
``providers.retell.protocol``: normal end = close 1000, failures = close 1011.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from providers.base import AudioFormat
from providers.retell import protocol
from providers.simulators.base import SimulatorServer
from providers.simulators.scripted_agent import (
    ABNORMAL_CLOSE,
    Script,
    ScriptedSession,
    SessionRecord,
    to_pcm16,
)

CLOSE_UNSUPPORTED = 1003  # a text frame other than "ping"
CLOSE_BAD_AUDIO = 1007  # odd-length s16le frame
CLOSE_INTERNAL = 1011  # Retell-side failure (error fault, default abrupt close)
_ENCODINGS = {"mulaw": "mulaw", "s16le": "pcm16"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error_message": message}, status=status)


class RetellSimulator(SimulatorServer):
    name = "retell"

    def __init__(self, api_key: str = "sim-retell-key", agents: tuple[str, ...] = ("agent_sim",)) -> None:
        super().__init__()
        self.api_key = api_key
        self.agents = set(agents)
        self.script = Script()
        self.registrations: list[dict[str, Any]] = []  # every accepted register-call body
        self.records: list[SessionRecord] = []
        self._pending: dict[str, dict[str, Any]] = {}  # call_id → registration, until its socket opens

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(protocol.REGISTER_PATH, self._register),
            web.get(protocol.AUDIO_WS_PATH + "{call_id}", self._audio_ws),
        ]

    async def _register(self, request: web.Request) -> web.Response:
        if self.faults.handshake_delay_s:
            await asyncio.sleep(self.faults.handshake_delay_s)
        if self.faults.refuse_handshake:
            return _error(self.faults.refuse_status, "refused by fault injection")
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Unauthorized: invalid API key")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        problem = _validate_register(body)
        if problem:
            return _error(400, problem)
        if body["agent_id"] not in self.agents:
            return _error(404, f"agent {body['agent_id']} not found")
        call_id = uuid.uuid4().hex
        self.registrations.append(body)
        self._pending[call_id] = body
        reply = {
            "call_id": call_id,
            "agent_id": body["agent_id"],
            "audio_websocket_protocol": body["audio_websocket_protocol"],
            "audio_encoding": body["audio_encoding"],
            "sample_rate": body["sample_rate"],
            "call_status": "registered",
        }
        return web.json_response(reply, status=201)

    async def _audio_ws(self, request: web.Request) -> web.StreamResponse:
        registration = self._pending.pop(request.match_info["call_id"], None)
        if registration is None:
            return _error(404, "call_id not registered or already connected")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        fmt = AudioFormat(_ENCODINGS[registration["audio_encoding"]], registration["sample_rate"])  # type: ignore[arg-type]
        session = _RetellSession(self, ws, fmt, updates=request.query.get("enable_update") == "true")
        session.transport = request.transport
        session.record.handshake = {"register": registration, "query": dict(request.query)}
        self.records.append(session.record)
        if registration["audio_websocket_protocol"] != "web":
            session.record.violations.append("simulator speaks only the web protocol")
            await ws.close(code=CLOSE_UNSUPPORTED, message=b"twilio protocol not simulated")
            return ws
        await session.run(ws)
        return ws


def _validate_register(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for key in ("agent_id", "audio_websocket_protocol", "audio_encoding", "sample_rate"):
        if key not in body:
            return f"{key} is required"
    if not isinstance(body["agent_id"], str) or not body["agent_id"]:
        return "agent_id must be a non-empty string"
    if body["audio_websocket_protocol"] not in ("web", "twilio"):
        return "audio_websocket_protocol must be one of web, twilio"
    if body["audio_encoding"] not in _ENCODINGS:
        return "audio_encoding must be one of s16le, mulaw"
    rate = body["sample_rate"]
    if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
        return "sample_rate must be an integer in [8000, 48000]"
    if body["audio_encoding"] == "mulaw" and rate != 8000:
        return "mulaw encoding requires sample_rate 8000"
    return None


class _RetellSession(ScriptedSession):
    def __init__(
        self, sim: RetellSimulator, ws: web.WebSocketResponse, fmt: AudioFormat, updates: bool
    ) -> None:
        super().__init__(sim, sim.script, fmt, fmt)
        self.ws = ws
        self.updates = updates
        self.transcript: list[dict[str, str]] = []

    async def serve(self) -> None:
        sample_width = self.in_fmt.sample_width
        async for msg in self.ws:
            if msg.type is WSMsgType.BINARY:
                data: bytes = msg.data
                if len(data) % sample_width:
                    self.record.violations.append(f"odd-length s16le frame ({len(data)} bytes)")
                    await self.ws.close(code=CLOSE_BAD_AUDIO, message=b"audio frame not whole samples")
                    return
                self.record.audio_frames += 1
                self.record.audio_bytes += len(data)
                await self.hear(to_pcm16(data, self.in_fmt))
            elif msg.type is WSMsgType.TEXT:
                self.record.messages.append(msg.data)
                if msg.data == protocol.PING:
                    await self.ws.send_str(protocol.PONG)
                else:
                    self.record.violations.append(f"unexpected text frame {msg.data[:60]!r}")
                    await self.ws.close(code=CLOSE_UNSUPPORTED, message=b"unexpected text frame")
                    return
        if self.record.ended_by is None:
            self.record.ended_by = "client"

    async def _update(self, turn: str) -> None:
        if self.updates and not self.ws.closed:
            await self.ws.send_str(
                orjson.dumps(
                    {"event_type": "update", "transcript": self.transcript, "turntaking": turn}
                ).decode()
            )

    async def send_agent_audio(self, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(data)

    async def on_user_turn(self, n: int, speech_ms: float) -> None:
        self.transcript.append({"role": "user", "content": f"utterance {n} ({speech_ms:.0f} ms)"})
        await self._update("agent_turn")

    async def on_agent_turn(self, n: int, text: str) -> None:
        self.transcript.append({"role": "agent", "content": text})
        await self._update("agent_turn")

    async def on_agent_done(self, n: int) -> None:
        await self._update("user_turn")

    async def send_interrupt(self) -> None:
        if not self.ws.closed:
            await self.ws.send_str(protocol.CLEAR)

    async def end_call(self, reason: str) -> None:
        await self.ws.close(code=1000, message=reason.encode())

    async def send_error(self) -> None:
        await self.ws.close(code=CLOSE_INTERNAL, message=b"internal server error")

    async def drop(self, code: int | None) -> None:
        if code == ABNORMAL_CLOSE and self.abort_connection():
            return
        await self.ws.close(code=code or CLOSE_INTERNAL, message=b"")
