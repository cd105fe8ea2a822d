"""ElevenLabs Agents Platform simulator (providers.md §1, §10): strict about what the real
service rejects, with fault injection.

- ``GET /v1/convai/conversation/get-signed-url?agent_id=`` (header ``xi-api-key``) returns a
  single-use signed WS URL; ``GET /v1/convai/conversation?agent_id=`` is the WebSocket.
- Formats are agent settings: ``user_input_audio_format``/``agent_output_audio_format`` on the
  simulator, or per agent by id suffix (``agent_x_pcm_16000`` speaks ``pcm_16000`` both ways) so a
  separately running simulator can serve PCM agents for transcoding benchmarks.
- Audio ``event_id`` is per turn (every chunk of one reply shares it); a barge-in while a reply is
  still being sent sends ``interruption`` and then ``stale_audio_after_interrupt`` more chunks of
  the cut reply, reproducing the pipeline race the SDK's ``event_id ≤`` rule exists for.
- UNVERIFIED: a bad/missing signature on a private agent is refused at the upgrade with HTTP 403.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import secrets
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from providers.base import AudioFormat
from providers.elevenlabs.protocol import (
    CLOSE_INTERNAL,
    CLOSE_INVALID,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CONVERSATION_PATH,
    FORMATS,
    SIGNED_URL_PATH,
    audio_format,
)
from providers.simulators.base import SimulatorServer
from providers.simulators.scripted_agent import Script, ScriptedSession, SessionRecord, to_pcm16

CLIENT_TYPES = frozenset(
    {
        "pong",
        "client_tool_result",
        "contextual_update",
        "user_message",
        "user_activity",
        "feedback",
        "mcp_tool_approval_result",
        "multimodal_message",
    }
)
OVERRIDE_KEYS = frozenset({"agent", "tts", "asr", "conversation"})
FIRST_MESSAGE_TIMEOUT_S = 10.0


class ElevenLabsSimulator(SimulatorServer):
    name = "elevenlabs"

    def __init__(self) -> None:
        super().__init__()
        self.script = Script()
        self.user_input_audio_format = "ulaw_8000"
        self.agent_output_audio_format = "ulaw_8000"
        self.known_agents: set[str] | None = None  # None accepts any agent id
        self.private_agents = False  # require a signed URL
        self.api_keys: set[str] | None = None  # None accepts any non-empty xi-api-key
        self.overrides_enabled = True
        self.ping_interval_s: float | None = 1.0
        self.stale_audio_after_interrupt = 1
        self.records: list[SessionRecord] = []
        self._signatures: set[str] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.get(SIGNED_URL_PATH, self._signed_url), web.get(CONVERSATION_PATH, self._conversation)]

    def agent_formats(self, agent_id: str) -> tuple[str, str]:
        """(input, output) format names for an agent: its id suffix, else the simulator defaults."""
        for name in FORMATS:
            if agent_id.endswith("_" + name):
                return name, name
        return self.user_input_audio_format, self.agent_output_audio_format

    def _agent_known(self, agent_id: str) -> bool:
        return bool(agent_id) and (self.known_agents is None or agent_id in self.known_agents)

    async def _signed_url(self, request: web.Request) -> web.Response:
        if self.faults.refuse_handshake:
            return web.json_response({"detail": "refused"}, status=self.faults.refuse_status)
        key = request.headers.get("xi-api-key", "")
        if not key or (self.api_keys is not None and key not in self.api_keys):
            return web.json_response({"detail": {"status": "invalid_api_key"}}, status=401)
        agent_id = request.query.get("agent_id", "")
        if not self._agent_known(agent_id):
            return web.json_response({"detail": {"status": "agent_not_found"}}, status=404)
        signature = secrets.token_urlsafe(16)
        self._signatures.add(signature)
        url = f"{self.ws_url}{CONVERSATION_PATH}?agent_id={agent_id}&conversation_signature={signature}"
        return web.json_response({"signed_url": url})

    async def _conversation(self, request: web.Request) -> web.StreamResponse:
        record = SessionRecord(handshake={"query": dict(request.query), "headers": dict(request.headers)})
        self.records.append(record)
        if self.faults.refuse_handshake:
            record.violations.append(f"refused with {self.faults.refuse_status}")
            return web.Response(status=self.faults.refuse_status, text="refused")
        signature = request.query.get("conversation_signature")
        if signature is not None:
            if signature not in self._signatures:
                record.violations.append("bad conversation_signature")
                return web.Response(status=403, text="invalid conversation signature")
            self._signatures.discard(signature)  # single use
        elif self.private_agents:
            record.violations.append("private agent without signature")
            return web.Response(status=403, text="authorization required")
        if self.faults.handshake_delay_s:
            await asyncio.sleep(self.faults.handshake_delay_s)
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        agent_id = request.query.get("agent_id", "")
        if not self._agent_known(agent_id):
            await _reject(ws, record, "invalid_message", f"Agent {agent_id!r} not found")
            return ws
        first = await _first_message(ws, record, self.overrides_enabled)
        if first is None:
            return ws
        in_name, out_name = self.agent_formats(agent_id)
        await _send(
            ws,
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": {
                    "conversation_id": f"conv_{secrets.token_hex(8)}",
                    "agent_output_audio_format": out_name,
                    "user_input_audio_format": in_name,
                },
            },
        )
        session = _Session(self, ws, record, audio_format(in_name), audio_format(out_name))
        agent_override = (first.get("conversation_config_override") or {}).get("agent") or {}
        if agent_override.get("first_message") == "":
            session.script = _caller_first(self.script)
        await session.run(ws, session.pings if self.ping_interval_s else None)
        return ws


def _caller_first(script: Script) -> Script:
    """The same script without the greeting (an empty ``first_message`` override)."""
    return dataclasses.replace(script, greeting_first=False)


async def _send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    if not ws.closed:
        await ws.send_frame(orjson.dumps(message), WSMsgType.TEXT)


async def _reject(ws: web.WebSocketResponse, record: SessionRecord, error_type: str, text: str) -> None:
    """The service's contract violation answer: ``error`` event, then close 1008."""
    record.violations.append(f"{error_type}: {text}")
    record.ended_by = "error"
    await _send(
        ws,
        {"type": "error", "error_event": {"code": CLOSE_INVALID, "message": text, "error_type": error_type}},
    )
    await ws.close(code=CLOSE_INVALID, message=text.encode()[:120])
    record.close_code = CLOSE_INVALID


async def _first_message(
    ws: web.WebSocketResponse, record: SessionRecord, overrides_enabled: bool
) -> dict[str, Any] | None:
    """Validate ``conversation_initiation_client_data``; reject anything else as the service does."""
    try:
        msg = await ws.receive(timeout=FIRST_MESSAGE_TIMEOUT_S)
    except TimeoutError:
        await _reject(ws, record, "transport_receive_timeout", "No initiation message received")
        return None
    if msg.type is not WSMsgType.TEXT:
        if msg.type is WSMsgType.BINARY:
            await _reject(ws, record, "invalid_message", "Invalid message received")
        return None
    try:
        first = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        await _reject(ws, record, "invalid_message", "Invalid message received")
        return None
    record.handshake["first_message"] = first
    if not isinstance(first, dict) or first.get("type") != "conversation_initiation_client_data":
        await _reject(ws, record, "invalid_message", "Expected conversation_initiation_client_data")
        return None
    override = first.get("conversation_config_override")
    if override is not None:
        if not isinstance(override, dict) or set(override) - OVERRIDE_KEYS:
            await _reject(ws, record, "invalid_message", "Invalid conversation_config_override")
            return None
        if override and not overrides_enabled:
            await _reject(ws, record, "override_error", "Override for field is not allowed by config")
            return None
    if not isinstance(first.get("dynamic_variables", {}), dict):
        await _reject(ws, record, "invalid_message", "dynamic_variables must be an object")
        return None
    return first


class _Session(ScriptedSession):
    def __init__(
        self,
        sim: ElevenLabsSimulator,
        ws: web.WebSocketResponse,
        record: SessionRecord,
        in_fmt: AudioFormat,
        out_fmt: AudioFormat,
    ) -> None:
        super().__init__(sim, sim.script, in_fmt, out_fmt)
        self.el = sim
        self.ws = ws
        self.record = record
        self.event_id = 0
        self.reply_id = 0
        self.sending = False
        self.last_chunk = b""
        self._tool_waiters: dict[str, asyncio.Future[Any]] = {}

    async def serve(self) -> None:
        ws, record = self.ws, self.record
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await _reject(ws, record, "invalid_message", "Invalid message received")
                return
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                message = orjson.loads(msg.data)
                chunk = message.get("user_audio_chunk")
            except (orjson.JSONDecodeError, AttributeError):
                await _reject(ws, record, "invalid_message", "Invalid message received")
                return
            if chunk is not None:
                try:
                    raw = base64.b64decode(chunk, validate=True)
                except (binascii.Error, ValueError, TypeError):
                    await _reject(ws, record, "invalid_message", "user_audio_chunk is not valid base64")
                    return
                record.audio_frames += 1
                record.audio_bytes += len(raw)
                await self.hear(to_pcm16(raw, self.in_fmt))
                continue
            if message.get("type") not in CLIENT_TYPES:
                await _reject(ws, record, "invalid_message", f"Unknown message type {message.get('type')!r}")
                return
            record.messages.append(message)
            if message["type"] == "client_tool_result":
                record.tool_results.append(message)
                waiter = self._tool_waiters.pop(str(message.get("tool_call_id")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
        if record.ended_by is None:
            record.ended_by = "client"

    async def pings(self) -> None:
        assert self.el.ping_interval_s is not None
        while not self.ws.closed:
            await asyncio.sleep(self.el.ping_interval_s)
            self.event_id += 1
            await _send(self.ws, {"type": "ping", "ping_event": {"event_id": self.event_id, "ping_ms": None}})

    async def _audio(self, chunk: bytes) -> None:
        b64 = base64.b64encode(chunk).decode()
        await _send(
            self.ws, {"type": "audio", "audio_event": {"audio_base_64": b64, "event_id": self.reply_id}}
        )

    async def send_agent_audio(self, data: bytes) -> None:
        self.last_chunk = data
        await self._audio(data)

    async def on_user_turn(self, n: int, speech_ms: float) -> None:
        self.event_id += 1
        body = {"user_transcript": f"utterance {n}", "event_id": self.event_id}
        await _send(self.ws, {"type": "user_transcript", "user_transcription_event": body})

    async def on_agent_turn(self, n: int, text: str) -> None:
        self.event_id += 1
        self.reply_id = self.event_id
        self.sending = True
        body = {"agent_response": text, "event_id": self.reply_id}
        await _send(self.ws, {"type": "agent_response", "agent_response_event": body})

    async def on_agent_done(self, n: int) -> None:
        self.sending = False
        self.last_chunk = b""

    async def send_interrupt(self) -> None:
        await _send(self.ws, {"type": "interruption", "interruption_event": {"event_id": self.reply_id}})
        if self.sending and self.last_chunk:
            for _ in range(self.el.stale_audio_after_interrupt):
                await self._audio(self.last_chunk)
        self.sending = False

    async def invoke_tool(self, name: str, arguments: dict[str, Any]) -> None:
        self.event_id += 1
        call_id = f"call_{self.event_id}"
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._tool_waiters[call_id] = waiter
        body = {
            "tool_name": name,
            "tool_call_id": call_id,
            "parameters": arguments,
            "event_id": self.event_id,
        }
        await _send(self.ws, {"type": "client_tool_call", "client_tool_call": body})
        try:
            await asyncio.wait_for(waiter, self.script.tool_timeout_s)
        except TimeoutError:
            self.record.violations.append(f"no client_tool_result for {call_id}")
        finally:
            self._tool_waiters.pop(call_id, None)

    async def end_call(self, reason: str) -> None:
        if reason == "exceeded-max-duration":
            body = {
                "code": CLOSE_NORMAL,
                "message": "Maximum duration exceeded",
                "error_type": "max_duration_exceeded",
            }
            await _send(self.ws, {"type": "error", "error_event": body})
        await self.ws.close(code=CLOSE_NORMAL, message=reason.encode())

    async def send_error(self) -> None:
        text = "LLM response took over 20 seconds"
        body = {"code": CLOSE_PROTOCOL, "message": text, "error_type": "llm_timeout"}
        await _send(self.ws, {"type": "error", "error_event": body})
        await self.ws.close(code=CLOSE_PROTOCOL, message=text.encode())

    async def drop(self, code: int | None) -> None:
        await self.ws.close(code=code or CLOSE_INTERNAL, message=b"Internal error")
