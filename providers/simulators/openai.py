"""OpenAI Realtime simulator (providers.md §3, §10): GA and beta dialects chosen by the
``OpenAI-Beta`` header, strict ``session.update`` validation (cross-dialect fields are "Unknown
parameter" errors), server-VAD turns, ``conversation.item.truncate`` checking, function calls and
``session_expired``.

The agent speaks only when asked: a client ``response.create`` (greeting) or server VAD's automatic
response after each caller utterance. UNVERIFIED: the close code after ``session_expired`` (1001,
as observed by one client) and after a server error (1011).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import itertools
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from providers.base import ALAW_8000, MULAW_8000, PCM16_24000, AudioFormat
from providers.openai.protocol import REALTIME_PATH
from providers.simulators.base import SimulatorServer, tone_pcm16
from providers.simulators.scripted_agent import Script, ScriptedSession, SessionRecord, to_pcm16

GA_FORMATS = {"audio/pcmu": MULAW_8000, "audio/pcma": ALAW_8000, "audio/pcm": PCM16_24000}
BETA_FORMATS = {"g711_ulaw": MULAW_8000, "g711_alaw": ALAW_8000, "pcm16": PCM16_24000}
SIMULATED = (MULAW_8000, PCM16_24000)  # the scripted agent decodes/encodes μ-law and PCM16 only
GA_SESSION_KEYS = {
    "type", "model", "output_modalities", "audio", "instructions", "tools", "tool_choice", "include",
    "max_output_tokens", "prompt", "tracing", "truncation",
}  # fmt: skip
BETA_SESSION_KEYS = {
    "modalities", "voice", "input_audio_format", "output_audio_format", "turn_detection",
    "input_audio_transcription", "instructions", "tools", "tool_choice", "temperature",
    "max_response_output_tokens", "input_audio_noise_reduction", "model", "speed", "tracing",
}  # fmt: skip
CLIENT_TYPES = {
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
}
CLOSE_EXPIRED = 1001
CLOSE_SERVER_ERROR = 1011


def validate_session(dialect: str, session: Any) -> tuple[AudioFormat, AudioFormat] | str:
    """(input, output) formats from a ``session.update`` body, or the error message."""
    if not isinstance(session, dict):
        return "Invalid type for 'session': expected an object."
    allowed = GA_SESSION_KEYS if dialect == "ga" else BETA_SESSION_KEYS
    for key in session:
        if key not in allowed:
            return f"Unknown parameter: 'session.{key}'."
    if dialect == "beta":
        formats = []
        for key in ("input_audio_format", "output_audio_format"):
            value = session.get(key, "pcm16")
            if value not in BETA_FORMATS:
                return (
                    f"Invalid value: '{value}'. Supported values are: 'pcm16', 'g711_ulaw', and 'g711_alaw'."
                )
            formats.append(BETA_FORMATS[value])
        if any(f not in SIMULATED for f in formats):
            return "Simulator limitation: A-law sessions are not simulated."
        return formats[0], formats[1]
    if session.get("type") != "realtime":
        return "Missing required parameter: 'session.type'."
    audio = session.get("audio") or {}
    formats = []
    for side in ("input", "output"):
        fmt = (audio.get(side) or {}).get("format") or {"type": "audio/pcm", "rate": 24000}
        if not isinstance(fmt, dict) or fmt.get("type") not in GA_FORMATS:
            return f"Invalid value for 'session.audio.{side}.format.type'."
        if fmt["type"] == "audio/pcm" and fmt.get("rate", 24000) != 24000:
            return f"Invalid value for 'session.audio.{side}.format.rate': only 24000 is supported."
        formats.append(GA_FORMATS[fmt["type"]])
    if any(f not in SIMULATED for f in formats):
        return "Simulator limitation: A-law sessions are not simulated."
    return formats[0], formats[1]


class OpenAISimulator(SimulatorServer):
    name = "openai"

    def __init__(self) -> None:
        super().__init__()
        self.script = Script()
        self.api_keys: set[str] | None = None  # None accepts any non-empty key
        self.records: list[SessionRecord] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.get(REALTIME_PATH, self._realtime)]

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        record = SessionRecord(handshake={"query": dict(request.query), "headers": dict(request.headers)})
        self.records.append(record)
        if self.faults.refuse_handshake:
            record.violations.append(f"refused with {self.faults.refuse_status}")
            return _http_error(self.faults.refuse_status, "refused", "server_error")
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key or (self.api_keys is not None and key not in self.api_keys):
            record.violations.append("unauthorized")
            return _http_error(401, "Incorrect API key provided.", "invalid_api_key")
        if "model" not in request.query:
            return _http_error(400, "Missing required parameter: 'model'.", "missing_model")
        if self.faults.handshake_delay_s:
            await asyncio.sleep(self.faults.handshake_delay_s)
        dialect = "beta" if request.headers.get("OpenAI-Beta") == "realtime=v1" else "ga"
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        session = _Session(self, ws, record, dialect)
        session.script = dataclasses.replace(self.script, greeting_first=False)  # greets on response.create
        await session.event(
            "session.created", session={"object": "realtime.session", "model": request.query["model"]}
        )
        await session.run(ws)
        return ws


def _http_error(status: int, message: str, code: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}, status=status
    )


class _Session(ScriptedSession):
    def __init__(
        self, sim: OpenAISimulator, ws: web.WebSocketResponse, record: SessionRecord, dialect: str
    ) -> None:
        super().__init__(sim, sim.script, PCM16_24000, PCM16_24000)  # formats until session.update
        self.ws = ws
        self.record = record
        self.dialect = dialect
        self.audio_delta = "response.output_audio.delta" if dialect == "ga" else "response.audio.delta"
        self.transcript_done = (
            "response.output_audio_transcript.done" if dialect == "ga" else "response.audio_transcript.done"
        )
        self.tool_names: set[str] = set()
        self.transcribe = False
        self.response_id: str | None = None  # the response being sent, if any
        self.item_id = ""
        self.item_ms: dict[str, float] = {}  # generated audio per agent item (for truncate checks)
        self.agent_text = ""
        self._ids = itertools.count(1)
        self._pending_call: str | None = None
        self._call_output = False
        self._hangup_call = False
        self._call_done: asyncio.Future[None] | None = None

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    async def event(self, kind: str, **fields: Any) -> None:
        if not self.ws.closed:
            await self.ws.send_frame(
                orjson.dumps({"type": kind, "event_id": self._id("event"), **fields}), WSMsgType.TEXT
            )

    async def error(
        self,
        message: str,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        event_id: Any = None,
    ) -> None:
        self.record.violations.append(message)
        await self.event(
            "error",
            error={"type": error_type, "code": code, "message": message, "param": None, "event_id": event_id},
        )

    async def serve(self) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.BINARY:
                await self.error("Binary frames are not supported.", "invalid_message")
                continue
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                message = orjson.loads(msg.data)
                kind = message["type"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                await self.error("The server failed to parse the event.", "invalid_json")
                continue
            if kind not in CLIENT_TYPES:
                await self.error(
                    f"Invalid value: '{kind}'.", "invalid_value", event_id=message.get("event_id")
                )
                continue
            if kind == "input_audio_buffer.append":
                await self._append(message)
            else:
                self.record.messages.append(message)
                await self._control(kind, message)
        if self.record.ended_by is None:
            self.record.ended_by = "client"

    async def _append(self, message: dict[str, Any]) -> None:
        try:
            raw = base64.b64decode(message.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            await self.error("Invalid 'audio'. Expected base64-encoded audio bytes.", "invalid_value")
            return
        self.record.audio_frames += 1
        self.record.audio_bytes += len(raw)
        await self.hear(to_pcm16(raw, self.in_fmt))

    async def _control(self, kind: str, message: dict[str, Any]) -> None:
        if kind == "session.update":
            await self._session_update(message)
        elif kind == "response.create":
            if self._pending_call is not None and self._call_output and self._call_done is not None:
                self._call_done.set_result(None)
            elif self.response_id is not None:
                await self.error(
                    "Conversation already has an active response", "conversation_already_has_active_response"
                )
            else:
                greeting = tone_pcm16(
                    self.script.greeting_hz, self.script.greeting_ms, self.out_fmt.sample_rate
                )
                self._speech_task = self.sim.spawn(self._turn(0, greeting, "greeting"))
        elif kind == "response.cancel":
            if self.response_id is None:
                await self.error(
                    "Cancellation failed: no active response found", "response_cancel_not_active"
                )
        elif kind == "conversation.item.truncate":
            await self._truncate(message)
        elif kind == "conversation.item.create":
            item = message.get("item") or {}
            if item.get("type") == "function_call_output" and item.get("call_id") == self._pending_call:
                self.record.tool_results.append(item)
                self._call_output = True
                if self._hangup_call and self._call_done is not None:
                    self._call_done.set_result(None)  # no response.create after the farewell

    async def _session_update(self, message: dict[str, Any]) -> None:
        checked = validate_session(self.dialect, message.get("session"))
        if isinstance(checked, str):
            await self.error(checked, "unknown_parameter" if "Unknown" in checked else "invalid_value")
            return
        session = message["session"]
        self.record.handshake["session"] = session
        self.in_fmt, self.out_fmt = checked
        self.vad = type(self.vad)(self.in_fmt.sample_rate)
        self.tool_names = {str(t.get("name")) for t in session.get("tools") or [] if isinstance(t, dict)}
        transcription = (
            ((session.get("audio") or {}).get("input") or {}).get("transcription")
            if self.dialect == "ga"
            else session.get("input_audio_transcription")
        )
        self.transcribe = bool(transcription)
        await self.event("session.updated", session=session)

    async def _truncate(self, message: dict[str, Any]) -> None:
        item_id = message.get("item_id")
        end_ms = message.get("audio_end_ms")
        if item_id not in self.item_ms:
            await self.error(
                f"Item with id '{item_id}' not found.", "item_not_found", event_id=message.get("event_id")
            )
        elif not isinstance(end_ms, int) or end_ms < 0 or end_ms > self.item_ms[item_id] + 1:
            await self.error(
                f"Audio content of {self.item_ms[item_id]:.0f}ms is shorter than {end_ms}ms",
                "invalid_value",
                event_id=message.get("event_id"),
            )
        else:
            await self.event(
                "conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=end_ms
            )

    # -- scripted agent hooks ----------------------------------------------------------------------
    async def on_caller_speech_start(self) -> None:
        await self.event("input_audio_buffer.speech_started", audio_start_ms=0, item_id=self._id("item"))

    async def send_interrupt(self) -> None:
        if self.response_id is not None:
            response = {
                "id": self.response_id,
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"},
            }
            self.response_id = None
            await self.event("response.done", response=response)

    async def on_user_turn(self, n: int, speech_ms: float) -> None:
        item_id = self._id("item")
        await self.event("input_audio_buffer.speech_stopped", audio_end_ms=int(speech_ms), item_id=item_id)
        await self.event("input_audio_buffer.committed", item_id=item_id)
        if self.transcribe:
            await self.event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=f"utterance {n}",
            )

    async def on_agent_turn(self, n: int, text: str) -> None:
        self.response_id = self._id("resp")
        self.item_id = self._id("item")
        self.item_ms[self.item_id] = 0.0
        self.agent_text = text
        await self.event("response.created", response={"id": self.response_id, "status": "in_progress"})
        item = {"id": self.item_id, "type": "message", "role": "assistant", "status": "in_progress"}
        await self.event(
            "response.output_item.added", response_id=self.response_id, output_index=0, item=item
        )

    async def send_agent_audio(self, data: bytes) -> None:
        self.item_ms[self.item_id] += self.out_fmt.ms_for_bytes(len(data))
        await self.event(
            self.audio_delta,
            response_id=self.response_id,
            item_id=self.item_id,
            output_index=0,
            content_index=0,
            delta=base64.b64encode(data).decode(),
        )

    async def on_agent_done(self, n: int) -> None:
        ids = {
            "response_id": self.response_id,
            "item_id": self.item_id,
            "output_index": 0,
            "content_index": 0,
        }
        await self.event(self.transcript_done, transcript=self.agent_text, **ids)
        await self.event(self.audio_delta.replace(".delta", ".done"), **ids)
        usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10}
        await self.event(
            "response.done", response={"id": self.response_id, "status": "completed", "usage": usage}
        )
        self.response_id = None

    async def _function_call(self, name: str, arguments: dict[str, Any], hangup: bool) -> None:
        response_id, item_id, call_id = self._id("resp"), self._id("item"), self._id("call")
        self._pending_call, self._call_output, self._hangup_call = call_id, False, hangup
        self._call_done = asyncio.get_running_loop().create_future()
        args = orjson.dumps(arguments).decode()
        await self.event("response.created", response={"id": response_id, "status": "in_progress"})
        await self.event(
            "response.function_call_arguments.delta",
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            call_id=call_id,
            delta=args,
        )
        await self.event(
            "response.function_call_arguments.done",
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            call_id=call_id,
            name=name,
            arguments=args,
        )
        await self.event("response.done", response={"id": response_id, "status": "completed"})
        try:
            await asyncio.wait_for(self._call_done, self.script.tool_timeout_s)
        except TimeoutError:
            self.record.violations.append(f"no function_call_output/response.create for {call_id}")
        finally:
            self._pending_call, self._call_done = None, None

    async def invoke_tool(self, name: str, arguments: dict[str, Any]) -> None:
        await self._function_call(name, arguments, hangup=False)

    async def end_call(self, reason: str) -> None:
        if reason == "exceeded-max-duration":
            await self.error(
                "Your session hit the maximum duration of 60 minutes.",
                "session_expired",
                error_type="invalid_request_error",
            )
            await self.ws.close(code=CLOSE_EXPIRED, message=b"session expired")
        elif "end_call" in self.tool_names:
            await self._function_call("end_call", {"reason": reason}, hangup=True)  # the client then closes
        else:
            self.record.violations.append("hang-up requested but no end_call tool was declared")

    async def send_error(self) -> None:
        await self.error(
            "The server had an error while processing your request.", "server_error", "server_error"
        )
        await self.ws.close(code=CLOSE_SERVER_ERROR, message=b"server error")

    async def drop(self, code: int | None) -> None:
        await self.ws.close(code=code or CLOSE_SERVER_ERROR, message=b"")
