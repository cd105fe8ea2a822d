"""Deepgram Voice Agent simulator (providers.md §2, §10): strict Settings validation, binary audio,
per-turn events, client-side function calls, idle timeout and fault injection.

UNVERIFIED choices: after a fatal ``Error`` the socket closes with 1008 for client mistakes and 1011
for server faults; the 2-hour cap (``expire_after_s``) closes with 1000 and reason text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from gateway.media_socket import MediaSocket
from providers.base import AudioFormat
from providers.deepgram.protocol import CONVERSE_PATH
from providers.simulators.base import SimulatorServer
from providers.simulators.scripted_agent import (
    Script,
    ScriptedSession,
    SessionRecord,
    convert_audio,
    to_pcm16,
)
from providers.ws_frames import OP_BINARY, OP_TEXT

INPUT_ENCODINGS = {"linear16": "pcm16", "mulaw": "mulaw"}  # the simulator decodes only these two
OUTPUT_ENCODINGS = {"linear16": "pcm16", "mulaw": "mulaw"}
KNOWN_INPUT = {
    "linear16",
    "linear32",
    "flac",
    "alaw",
    "mulaw",
    "amr-nb",
    "amr-wb",
    "opus",
    "ogg-opus",
    "speex",
    "g729",
}
KNOWN_OUTPUT = {"linear16", "mulaw", "alaw", "mp3", "opus", "flac", "aac"}
CLIENT_TYPES = {
    "Settings",
    "KeepAlive",
    "FunctionCallResponse",
    "InjectAgentMessage",
    "InjectUserMessage",
    "UpdatePrompt",
    "UpdateSpeak",
    "UpdateThink",
    "UpdateListen",
}
CLOSE_CLIENT_ERROR = 1008
CLOSE_SERVER_ERROR = 1011


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_settings(settings: dict[str, Any]) -> tuple[AudioFormat, AudioFormat] | str:
    """The negotiated (input, output) formats, or the INVALID_SETTINGS description."""
    audio = settings.get("audio") or {}
    inp = audio.get("input") or {"encoding": "linear16", "sample_rate": 24000}
    out = audio.get("output") or {"encoding": "linear16", "sample_rate": 24000, "container": "none"}
    for side, body, known in (("input", inp, KNOWN_INPUT), ("output", out, KNOWN_OUTPUT)):
        if not isinstance(body, dict) or body.get("encoding") not in known:
            return f"audio.{side}.encoding is not a supported encoding"
        if not _is_int(body.get("sample_rate")):
            return f"audio.{side}.sample_rate must be an integer"
    if out.get("container", "none") not in ("none", "wav", "ogg"):
        return "audio.output.container must be one of none, wav, ogg"
    if out["encoding"] in ("mulaw", "alaw") and out["sample_rate"] not in (8000, 16000):
        return "audio.output.sample_rate must be 8000 or 16000 for G.711"
    if inp["encoding"] not in INPUT_ENCODINGS or out["encoding"] not in OUTPUT_ENCODINGS:
        return "the simulator only speaks linear16 and mulaw"
    agent = settings.get("agent")
    if isinstance(agent, str):
        pass  # a stored agent configuration id
    elif not isinstance(agent, dict) or not all(
        isinstance(agent.get(k), dict) for k in ("listen", "think", "speak")
    ):
        return "agent must have listen, think and speak"
    return (
        AudioFormat(INPUT_ENCODINGS[inp["encoding"]], inp["sample_rate"]),  # type: ignore[arg-type]
        AudioFormat(OUTPUT_ENCODINGS[out["encoding"]], out["sample_rate"]),  # type: ignore[arg-type]
    )


class DeepgramSimulator(SimulatorServer):
    name = "deepgram"

    def __init__(self) -> None:
        super().__init__()
        self.script = Script()
        self.api_keys: set[str] | None = None  # None accepts any non-empty key
        self.idle_timeout_s = 10.0  # no audio or KeepAlive this long → CLIENT_MESSAGE_TIMEOUT
        self.records: list[SessionRecord] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.get(CONVERSE_PATH, self._converse)]

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer"):
            protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            key = protocols[1] if len(protocols) == 2 and protocols[0] == "token" else ""
        return bool(key) and (self.api_keys is None or key in self.api_keys)

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        record = SessionRecord(handshake={"headers": dict(request.headers)})
        self.records.append(record)
        if self.faults.refuse_handshake:
            record.violations.append(f"refused with {self.faults.refuse_status}")
            return web.json_response({"err_code": "REFUSED"}, status=self.faults.refuse_status)
        if not self._authorized(request):
            record.violations.append("unauthorized")
            return web.json_response(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status=401
            )
        if self.faults.handshake_delay_s:
            await asyncio.sleep(self.faults.handshake_delay_s)
        if self.script.relay:
            return await _RelaySession(self, record).serve(request)
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, protocols=("token", "bearer"))
        await ws.prepare(request)
        await _send(ws, {"type": "Welcome", "request_id": str(uuid.uuid4())})
        negotiated = await self._settings(ws, record)
        if negotiated is None:
            return ws
        settings, in_fmt, out_fmt = negotiated
        agent = settings["agent"] if isinstance(settings["agent"], dict) else {}
        greeting = str(agent.get("greeting") or "")
        functions = {
            f.get("name") for f in (agent.get("think") or {}).get("functions") or [] if isinstance(f, dict)
        }
        session = _Session(self, ws, record, in_fmt, out_fmt, functions)
        session.script = dataclasses.replace(self.script, greeting_first=bool(greeting))
        await _send(ws, {"type": "SettingsApplied"})
        await session.run(ws, session.watchdog)
        return ws

    async def _settings(
        self, ws: web.WebSocketResponse, record: SessionRecord
    ) -> tuple[dict[str, Any], AudioFormat, AudioFormat] | None:
        msg = await ws.receive()
        if msg.type is WSMsgType.BINARY:
            await _fatal(ws, record, "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "Audio sent before Settings.")
            return None
        if msg.type is not WSMsgType.TEXT:
            return None
        try:
            settings = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            await _fatal(ws, record, "UNPARSABLE_CLIENT_MESSAGE", "We could not parse the client message.")
            return None
        record.handshake["settings"] = settings
        if not isinstance(settings, dict) or settings.get("type") != "Settings":
            await _fatal(
                ws, record, "NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "First message must be Settings."
            )
            return None
        checked = validate_settings(settings)
        if isinstance(checked, str):
            await _fatal(ws, record, "INVALID_SETTINGS", checked)
            return None
        return settings, checked[0], checked[1]


async def _send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    if not ws.closed:
        await ws.send_frame(orjson.dumps(message), WSMsgType.TEXT)


async def _fatal(ws: web.WebSocketResponse, record: SessionRecord, code: str, description: str) -> None:
    record.violations.append(f"{code}: {description}")
    record.ended_by = "error"
    await _send(ws, {"type": "Error", "code": code, "description": description})
    await ws.close(code=CLOSE_CLIENT_ERROR, message=code.encode())
    record.close_code = CLOSE_CLIENT_ERROR


class _RelaySession:
    """``--relay`` for ``voicegw bench``: the same handshake (Welcome, Settings validated,
    SettingsApplied), then every audio frame straight back as it is parsed.

    Runs on the gateway's lean server socket rather than aiohttp's ``WebSocketResponse`` because
    the bench puts this simulator on the load generator's core, where aiohttp's per-message cost
    made the generator, not the gateway, the limit. The scripted mode (all the tests) stays on
    aiohttp, so the gateway's client is still checked against an independent implementation.
    """

    def __init__(self, sim: SimulatorServer, record: SessionRecord) -> None:
        self.sim = sim
        self.record = record
        self.sock: MediaSocket | None = None
        self.closing: set[asyncio.Task[None]] = set()
        # Set once Settings are applied: sends one audio frame back, as is when the formats match. The
        # bench's every relayed frame runs this path on the load generator's core, so the format check
        # and the conversion's call are decided once here, not per frame.
        self.echo: Callable[[bytes], object] | None = None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        sock, response = await MediaSocket.accept(request, max_message_bytes=16 * 1024 * 1024)
        self.sock = sock
        closed = asyncio.Event()
        sock.send_text(orjson.dumps({"type": "Welcome", "request_id": str(uuid.uuid4())}))
        sock.start(self._on_message, closed.set)
        self.sim.sessions_started += 1
        self.sim.sessions_active += 1
        try:
            await closed.wait()
            await asyncio.gather(*self.closing)
        finally:
            self.sim.sessions_active -= 1
        if self.record.ended_by is None:
            self.record.ended_by = "client"
        self.record.close_code = sock.close_code
        return response

    def _on_message(self, opcode: int, payload: bytes) -> None:
        echo = self.echo
        if echo is not None and opcode == OP_BINARY:
            record = self.record
            record.audio_frames += 1
            record.audio_bytes += len(payload)
            echo(payload)
            return
        assert self.sock is not None
        if opcode != OP_TEXT:  # audio before Settings: the same answers as the scripted mode
            self._fatal("NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "Audio sent before Settings.")
            return
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self._fatal("UNPARSABLE_CLIENT_MESSAGE", "We could not parse the client message.")
        elif self.echo is None:
            self.record.handshake["settings"] = message
            if message.get("type") != "Settings":
                self._fatal("NON_SETTINGS_MESSAGE_BEFORE_SETTINGS", "First message must be Settings.")
                return
            checked = validate_settings(message)
            if isinstance(checked, str):
                self._fatal("INVALID_SETTINGS", checked)
                return
            self.echo = _echo(self.sock, *checked)
            self.sock.send_text(orjson.dumps({"type": "SettingsApplied"}))
        else:
            self.record.messages.append(message)

    def _fatal(self, code: str, description: str) -> None:
        assert self.sock is not None
        self.record.violations.append(f"{code}: {description}")
        self.record.ended_by = "error"
        self.sock.send_text(orjson.dumps({"type": "Error", "code": code, "description": description}))
        task = asyncio.get_running_loop().create_task(self.sock.close(CLOSE_CLIENT_ERROR, code))
        self.closing.add(task)


def _echo(sock: MediaSocket, in_fmt: AudioFormat, out_fmt: AudioFormat) -> Callable[[bytes], object]:
    """What sends a relayed frame back: the socket's own ``send_binary`` when no conversion is needed."""
    send = sock.send_binary
    if in_fmt == out_fmt:
        return send

    def converted(payload: bytes) -> bool:
        return send(convert_audio(payload, in_fmt, out_fmt))

    return converted


class _Session(ScriptedSession):
    def __init__(
        self,
        sim: DeepgramSimulator,
        ws: web.WebSocketResponse,
        record: SessionRecord,
        in_fmt: AudioFormat,
        out_fmt: AudioFormat,
        functions: set[Any],
    ) -> None:
        super().__init__(sim, sim.script, in_fmt, out_fmt)
        self.dg = sim
        self.ws = ws
        self.record = record
        self.functions = functions
        self.last_activity = time.monotonic()
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._calls = 0

    async def serve(self) -> None:
        ws, record = self.ws, self.record
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                self.last_activity = time.monotonic()
                record.audio_frames += 1
                record.audio_bytes += len(msg.data)
                if len(msg.data) % self.in_fmt.sample_width:
                    await _fatal(ws, record, "USER_AUDIO_FORMAT", "Audio does not match the declared format.")
                    return
                if self.script.relay:
                    await self.relay(msg.data)
                else:
                    await self.hear(to_pcm16(msg.data, self.in_fmt))
                continue
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                message = orjson.loads(msg.data)
                kind = message["type"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                await _fatal(
                    ws, record, "UNPARSABLE_CLIENT_MESSAGE", "We could not parse the client message."
                )
                return
            if kind not in CLIENT_TYPES:
                await _fatal(ws, record, "UNPARSABLE_CLIENT_MESSAGE", f"Unknown message type {kind!r}.")
                return
            record.messages.append(message)
            if kind == "KeepAlive":
                self.last_activity = time.monotonic()
            elif kind == "Settings":
                await _send(
                    ws, {"type": "Error", "code": "SETTINGS_ALREADY_APPLIED", "description": "Only once."}
                )
            elif kind == "FunctionCallResponse":
                record.tool_results.append(message)
                waiter = self._waiters.pop(str(message.get("id")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
        if record.ended_by is None:
            record.ended_by = "client"

    async def watchdog(self) -> None:
        """Deepgram closes sessions that send neither audio nor KeepAlive for ~10 s."""
        while not self.ws.closed:
            remaining = self.last_activity + self.dg.idle_timeout_s - time.monotonic()
            if remaining <= 0:
                self.record.ended_by = "error"
                await _send(
                    self.ws,
                    {
                        "type": "Error",
                        "code": "CLIENT_MESSAGE_TIMEOUT",
                        "description": "We waited too long for a websocket message.",
                    },
                )
                await self.ws.close(code=CLOSE_CLIENT_ERROR, message=b"CLIENT_MESSAGE_TIMEOUT")
                return
            await asyncio.sleep(remaining)

    async def send_agent_audio(self, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(data)

    async def on_caller_speech_start(self) -> None:
        await _send(self.ws, {"type": "UserStartedSpeaking"})

    async def send_interrupt(self) -> None:
        """``UserStartedSpeaking`` already told the client; the cut reply simply stops."""

    async def on_user_turn(self, n: int, speech_ms: float) -> None:
        await _send(self.ws, {"type": "ConversationText", "role": "user", "content": f"utterance {n}"})
        await _send(self.ws, {"type": "AgentThinking", "content": ""})

    async def on_agent_turn(self, n: int, text: str) -> None:
        await _send(self.ws, {"type": "ConversationText", "role": "assistant", "content": text})
        latency = {"total_latency": 0.05, "tts_latency": 0.02, "ttt_latency": 0.03}
        await _send(self.ws, {"type": "AgentStartedSpeaking", **latency})

    async def on_agent_done(self, n: int) -> None:
        await _send(self.ws, {"type": "AgentAudioDone"})

    async def _function_call(self, name: str, arguments: dict[str, Any]) -> None:
        self._calls += 1
        call_id = f"fc_{self._calls}"
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = waiter
        function = {
            "id": call_id,
            "name": name,
            "arguments": orjson.dumps(arguments).decode(),
            "client_side": True,
        }
        await _send(self.ws, {"type": "FunctionCallRequest", "functions": [function]})
        try:
            await asyncio.wait_for(waiter, self.script.tool_timeout_s)
        except TimeoutError:
            self.record.violations.append(f"no FunctionCallResponse for {call_id}")
        finally:
            self._waiters.pop(call_id, None)

    async def invoke_tool(self, name: str, arguments: dict[str, Any]) -> None:
        await self._function_call(name, arguments)

    async def end_call(self, reason: str) -> None:
        if reason == "exceeded-max-duration":
            await self.ws.close(code=1000, message=b"Maximum session duration reached")
        elif "end_call" in self.functions:
            await self._function_call("end_call", {"reason": reason})  # the client then closes
        else:
            self.record.violations.append("hang-up requested but no end_call function was declared")

    async def send_error(self) -> None:
        await _send(
            self.ws, {"type": "Error", "code": "INTERNAL_SERVER_ERROR", "description": "Internal error."}
        )
        await self.ws.close(code=CLOSE_SERVER_ERROR, message=b"INTERNAL_SERVER_ERROR")

    async def drop(self, code: int | None) -> None:
        await self.ws.close(code=code or CLOSE_SERVER_ERROR, message=b"")
