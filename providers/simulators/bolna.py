"""Bolna simulator: the agent server's ``/chat/v1/{agent_id}`` socket in both of Bolna's dialects.

Each simulated agent has a dialect, as a real agent's ``tools_config`` decides: ``twilio``
(Twilio Media Streams JSON, μ-law 8 kHz, a post-mark after every ``media``) or ``default``
(web JSON: waits for ``init``, answers ``ack``, pre-mark/``audio``/post-mark per chunk, PCM16 in
at the agent's rate and 24 kHz out). Strict where Bolna's handlers would break: malformed JSON,
binary frames, missing ``start`` ids, bad base64 or a non-integer ``media.timestamp`` end the
session with close 1011 (UNVERIFIED code: what an unhandled error in Bolna's FastAPI handler
yields). Unknown agents are accepted and then closed 1011, as Bolna's endpoint does after
``accept()``. The farewell ends the call only after its final mark is echoed (Bolna's
``agent_hangup`` rule), then closes 1000. There are no tool calls in this protocol.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from providers.base import MULAW_8000, AudioFormat
from providers.bolna import protocol
from providers.simulators.base import SimulatorServer
from providers.simulators.scripted_agent import (
    ABNORMAL_CLOSE,
    Script,
    ScriptedSession,
    SessionRecord,
    to_pcm16,
)

CLOSE_INTERNAL = 1011
HANGUP_MARK_GRACE_S = 3.0  # how long past the farewell's play-out we wait for its final mark


@dataclass(frozen=True, slots=True)
class BolnaAgent:
    dialect: protocol.Dialect = "twilio"
    input_rate: int = protocol.WEB_INPUT_RATE  # web dialect only: the agent transcriber's rate


class _Malformed(Exception):
    """Input that would raise inside Bolna's handlers."""


class BolnaSimulator(SimulatorServer):
    name = "bolna"

    def __init__(self, agents: dict[str, BolnaAgent] | None = None) -> None:
        super().__init__()
        self.agents = agents or {"agent-twilio": BolnaAgent("twilio"), "agent-web": BolnaAgent("default")}
        self.script = Script()
        self.records: list[SessionRecord] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.get(protocol.WS_PATH + "{agent_id}", self._socket)]

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if self.faults.refuse_handshake:
            return web.json_response(
                {"detail": "refused by fault injection"}, status=self.faults.refuse_status
            )
        agent = self.agents.get(request.match_info["agent_id"])
        if agent is not None and agent.dialect == "twilio" and self.faults.handshake_delay_s:
            await asyncio.sleep(self.faults.handshake_delay_s)  # no handshake reply in this dialect
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        record = SessionRecord(handshake={"agent_id": request.match_info["agent_id"]})
        self.records.append(record)
        if agent is None:
            record.violations.append("unknown agent")
            await ws.close(code=CLOSE_INTERNAL, message=b"Agent not found")
            return ws
        session: _BolnaSession = (
            _TwilioSession(self, ws, record)
            if agent.dialect == "twilio"
            else _WebSession(self, ws, record, agent)
        )
        session.transport = request.transport
        try:
            await session.serve()
        except _Malformed as exc:
            record.violations.append(str(exc))
            await ws.close(code=CLOSE_INTERNAL, message=b"internal error")
        finally:
            if session.started:
                session.finish()
            record.close_code = ws.close_code
        return ws


class _BolnaSession(ScriptedSession):
    """Shared by both dialects: marks, hang-up on the final mark echo, faults as socket closes."""

    def __init__(
        self,
        sim: BolnaSimulator,
        ws: web.WebSocketResponse,
        record: SessionRecord,
        in_fmt: AudioFormat,
        out_fmt: AudioFormat,
    ) -> None:
        super().__init__(sim, sim.script, in_fmt, out_fmt)
        self.record = record
        self.ws = ws
        self.started = False
        self.outstanding: dict[str, bool] = {}  # mark name → is it the farewell's final mark
        self._farewell_heard = asyncio.Event()
        self._in_farewell = False
        self._last_mark: str | None = None

    def start_conversation(self) -> None:
        if not self.started:
            self.started = True
            self.begin()

    async def serve(self) -> None:
        async for msg in self.ws:
            if msg.type is not WSMsgType.TEXT:
                raise _Malformed("binary frame (Bolna reads text only)")
            try:
                packet = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                raise _Malformed(f"invalid JSON {msg.data[:60]!r}") from None
            if not isinstance(packet, dict):
                raise _Malformed("message is not a JSON object")
            if not await self.handle(packet):
                break
        if self.record.ended_by is None:
            self.record.ended_by = "client"

    @abstractmethod
    async def handle(self, packet: dict[str, Any]) -> bool:
        """One client message; False ends the session."""

    def heard_mark(self, name: Any) -> None:
        if not isinstance(name, str):
            raise _Malformed("mark without a name")
        self.record.marks_echoed.append(name)
        final = self.outstanding.pop(name, None)
        if final is None:
            self.record.violations.append(f"echo of unknown mark {name!r}")
        elif final:
            self._farewell_heard.set()

    def decode_b64(self, data: Any) -> bytes:
        if not isinstance(data, str):
            raise _Malformed("audio payload is not a string")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Malformed("audio payload is not valid base64") from None

    async def send_json(self, msg: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(orjson.dumps(msg).decode())

    def new_mark(self) -> str:
        name = str(uuid.uuid4())
        self.outstanding[name] = False
        self._last_mark = name
        return name

    async def on_agent_turn(self, n: int, text: str) -> None:
        self._in_farewell = text == "goodbye"

    async def on_agent_done(self, n: int) -> None:
        if not self._in_farewell or self._last_mark is None:
            return
        if self._last_mark in self.outstanding:
            self.outstanding[self._last_mark] = True  # its echo lets Bolna hang up
        else:
            self._farewell_heard.set()  # already echoed

    async def end_call(self, reason: str) -> None:
        if self._in_farewell:  # an agent hang-up waits for the farewell to be heard; expiry does not
            farewell_s = self.script.farewell_ms / 1000
            try:
                await asyncio.wait_for(self._farewell_heard.wait(), farewell_s + HANGUP_MARK_GRACE_S)
            except TimeoutError:
                self.record.violations.append("farewell's final mark was never echoed")
        await self.ws.close(code=1000, message=reason.encode())

    async def send_error(self) -> None:
        await self.ws.close(code=CLOSE_INTERNAL, message=b"internal error")

    async def drop(self, code: int | None) -> None:
        if code == ABNORMAL_CLOSE and self.abort_connection():
            return
        await self.ws.close(code=code or CLOSE_INTERNAL)


class _TwilioSession(_BolnaSession):
    def __init__(self, sim: BolnaSimulator, ws: web.WebSocketResponse, record: SessionRecord) -> None:
        super().__init__(sim, ws, record, MULAW_8000, MULAW_8000)
        self.stream_sid: str | None = None

    async def handle(self, packet: dict[str, Any]) -> bool:
        event = packet.get("event")
        if event != "media":
            self.record.messages.append(packet)
        if event == "connected":
            return True
        if event == "start":
            start = packet.get("start")
            if not isinstance(start, dict) or "streamSid" not in start or "callSid" not in start:
                raise _Malformed("start without start.streamSid/start.callSid")
            self.stream_sid = str(start["streamSid"])
            self.record.handshake["start"] = start
            self.start_conversation()
            return True
        if event == "media":
            media = packet.get("media")
            if not isinstance(media, dict):
                raise _Malformed("media without a media object")
            audio = self.decode_b64(media.get("payload"))
            try:
                int(media["timestamp"])
            except (KeyError, TypeError, ValueError):
                raise _Malformed("media.timestamp missing or not an integer") from None
            if self.stream_sid is None:
                self.record.violations.append("media before start")
                return True
            self.record.audio_frames += 1
            self.record.audio_bytes += len(audio)
            await self.hear(to_pcm16(audio, self.in_fmt))
            return True
        if event == "mark":
            mark = packet.get("mark")
            self.heard_mark(mark.get("name") if isinstance(mark, dict) else None)
            return True
        if event == "dtmf":
            dtmf = packet.get("dtmf")
            if not isinstance(dtmf, dict) or not isinstance(dtmf.get("digit"), str):
                raise _Malformed("dtmf without dtmf.digit")
            return True
        if event == "stop":
            self.record.ended_by = "client"
            await self.ws.close(code=1000)
            return False
        self.record.violations.append(f"unknown event {event!r}")
        return True

    async def send_agent_audio(self, data: bytes) -> None:
        await self.send_json(
            {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"payload": base64.b64encode(data).decode()},
            }
        )
        await self.send_json(
            {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": self.new_mark()}}
        )

    async def send_interrupt(self) -> None:
        self.outstanding.clear()
        await self.send_json({"event": "clear", "streamSid": self.stream_sid})


class _WebSession(_BolnaSession):
    def __init__(
        self, sim: BolnaSimulator, ws: web.WebSocketResponse, record: SessionRecord, agent: BolnaAgent
    ) -> None:
        super().__init__(
            sim,
            ws,
            record,
            AudioFormat("pcm16", agent.input_rate),
            AudioFormat("pcm16", protocol.WEB_OUTPUT_RATE),
        )

    async def handle(self, packet: dict[str, Any]) -> bool:
        kind = packet.get("type")
        if kind != "audio":
            self.record.messages.append(packet)
        if kind == "init":
            self.record.handshake["init"] = packet.get("meta_data")
            if self.faults.handshake_delay_s:
                await asyncio.sleep(self.faults.handshake_delay_s)
            await self.send_json({"type": "ack"})
            self.start_conversation()  # the welcome message waits for init on web calls
            return True
        if kind == "audio":
            audio = self.decode_b64(packet.get("data"))
            if not self.started:
                self.record.violations.append("audio before init")
            if len(audio) % 2:
                self.record.violations.append("odd-length PCM16 audio")
                return True
            self.record.audio_frames += 1
            self.record.audio_bytes += len(audio)
            await self.hear(audio)
            return True
        if kind == "mark":
            self.heard_mark(packet.get("name"))
            return True
        if kind == "text":
            return True
        self.record.violations.append(f"unknown type {kind!r}")  # Bolna ignores these
        return True

    async def send_agent_audio(self, data: bytes) -> None:
        await self.send_json({"type": "mark", "name": self.new_mark()})
        await self.send_json({"type": "audio", "data": base64.b64encode(data).decode()})
        await self.send_json({"type": "mark", "name": self.new_mark()})

    async def send_interrupt(self) -> None:
        self.outstanding.clear()
        await self.send_json({"data": None, "type": "clear"})
