"""End-to-end rigs for the provider adapters: a simulator, a gateway routed to it, a tapped fake carrier.

``ProviderRig.open(provider, ...)`` starts that provider's simulator, an in-process gateway (real
port, real SQLite file) and provisions one tenant whose number routes to an agent on the provider,
with ``platform_providers[].config.base_url`` pointing at the simulator and the simulator's
expected key as ``api_key``. ``rig.call(...)`` places one call with the fake carrier from
``loadtest.carriers`` and returns what it observed plus a ``CarrierTap``: every text frame the
carrier received, timed, so tests can tell what arrived before and after a ``clear`` and when the
gateway closed the leg.

The simulated agent's tones: greeting 440 Hz, farewell 660 Hz, and each reply echoes the caller's
own 1000 Hz burst (which the fake carrier's tone detector times).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.config import Settings
from loadtest.audio import ToneBursts
from loadtest.carriers.call import place_call
from loadtest.carriers.plan import CallPlan, CallResult
from loadtest.carriers.telnyx_api import TelnyxApi
from providers.base import MULAW_8000
from providers.simulators.base import Faults, SimulatorServer
from providers.simulators.bolna import BolnaSimulator
from providers.simulators.deepgram import DeepgramSimulator
from providers.simulators.elevenlabs import ElevenLabsSimulator
from providers.simulators.openai import OpenAISimulator
from providers.simulators.retell import RetellSimulator
from providers.simulators.scripted_agent import Script, SessionRecord, dominant_frequency
from providers.simulators.vapi import VapiSimulator
from storage.provision import provision
from tests.e2e.conftest import RunningGateway, make_settings, start_gateway, stop_gateway

CONNECT_DEADLINE_S = 1.0  # short, so the handshake-timeout test stays short; localhost connects in ms
GREETING_HZ = 440.0
FAREWELL_HZ = 660.0
CALLER_HZ = 1000.0
TONE_TOLERANCE_HZ = 60.0  # a 20 ms frame at 8 kHz resolves 50 Hz
TOOL_NAME = "lookup_order"
TOOL_RESULT = {"status": "shipped"}
OWNER = "owner@example.com"


@dataclass(frozen=True)
class ProviderSpec:
    """How one provider is simulated, keyed and configured for an agent on it."""

    name: str
    make_simulator: Callable[[], SimulatorServer]
    api_key: str
    voice_config: dict[str, Any]
    caller_first: dict[str, Any] | None  # voice_config that makes the agent wait; None: an agent setting
    has_tools: bool  # the protocol carries client tool calls
    transcripts: tuple[str, ...]  # lines the simulator's transcripts put in calls.transcription
    pcm_voice_config: dict[str, Any] | None = None  # an agent whose audio the gateway must transcode


def _elevenlabs() -> SimulatorServer:
    sim = ElevenLabsSimulator()
    sim.api_keys = {"sim-el-key"}
    return sim


def _deepgram() -> SimulatorServer:
    sim = DeepgramSimulator()
    sim.api_keys = {"sim-dg-key"}
    return sim


def _openai() -> SimulatorServer:
    sim = OpenAISimulator()
    sim.api_keys = {"sim-oai-key"}
    return sim


SPECS: dict[str, ProviderSpec] = {
    "elevenlabs": ProviderSpec(
        "elevenlabs",
        _elevenlabs,
        "sim-el-key",
        {"agent_id": "agent_e2e"},
        {"speak_first": False},
        has_tools=True,
        transcripts=("agent: greeting", "user: utterance 1", "agent: echo 1"),
        pcm_voice_config={"agent_id": "agent_e2e_pcm_16000"},
    ),
    "deepgram": ProviderSpec(
        "deepgram",
        _deepgram,
        "sim-dg-key",
        {"first_message": "Hello"},
        {"speak_first": False},
        has_tools=True,
        transcripts=("agent: greeting", "user: utterance 1", "agent: echo 1"),
        pcm_voice_config={"first_message": "Hello", "audio_format": "pcm16_16000"},
    ),
    "openai": ProviderSpec(
        "openai",
        _openai,
        "sim-oai-key",
        {"first_message": "Hello"},
        {"speak_first": False},
        has_tools=True,
        transcripts=("agent: greeting", "user: utterance 1", "agent: echo 1"),
        pcm_voice_config={"first_message": "Hello", "audio_format": "pcm16_24000"},
    ),
    "retell": ProviderSpec(
        "retell",
        lambda: RetellSimulator(api_key="sim-retell-key"),
        "sim-retell-key",
        {"agent_id": "agent_sim"},
        None,
        has_tools=False,
        transcripts=("agent: greeting", "user: utterance 1 (", "agent: echo 1"),
    ),
    "vapi": ProviderSpec(
        "vapi",
        lambda: VapiSimulator(api_key="sim-vapi-key"),
        "sim-vapi-key",
        {"assistant_id": "asst_sim"},
        {"assistant_overrides": {"firstMessageMode": "assistant-waits-for-user"}},
        has_tools=True,
        transcripts=("agent: greeting", "user: utterance 1", "agent: echo 1"),
    ),
    "bolna": ProviderSpec(
        "bolna",
        BolnaSimulator,
        "sim-bolna-key",
        {"agent_id": "agent-twilio", "io_provider": "twilio"},
        None,
        has_tools=False,
        transcripts=(),
        pcm_voice_config={"agent_id": "agent-web", "io_provider": "default"},
    ),
}
PROVIDERS = tuple(SPECS)
TOOL_PROVIDERS = tuple(name for name, spec in SPECS.items() if spec.has_tools)
PCM_PROVIDERS = tuple(name for name, spec in SPECS.items() if spec.pcm_voice_config is not None)


# ------------------------------------------------------------------ the carrier's view


@dataclass
class CarrierTap:
    """Every text frame the fake carrier received from the gateway, with its arrival time."""

    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed_at: float | None = None  # when the gateway's close reached the carrier

    def media(self) -> list[tuple[float, bytes]]:
        media = [(t, m["media"]["payload"]) for t, m in self.messages if m.get("event") == "media"]
        return [(t, base64.b64decode(payload)) for t, payload in media]

    def clear_times(self) -> list[float]:
        return [t for t, m in self.messages if m.get("event") == "clear"]

    def tone_chunks(self, hz: float, *, after: float = float("-inf")) -> list[tuple[float, float]]:
        """(arrival time, seconds of audio) of μ-law media messages whose strongest frequency is ``hz``."""
        return [
            (t, len(audio) / MULAW_8000.bytes_per_second)
            for t, audio in self.media()
            if t > after and abs(dominant_frequency(audio, MULAW_8000) - hz) < TONE_TOLERANCE_HZ
        ]

    def tone_times(self, hz: float, *, after: float = float("-inf")) -> list[float]:
        return [t for t, _ in self.tone_chunks(hz, after=after)]

    def tone_seconds(self, hz: float, *, after: float = float("-inf")) -> float:
        return sum(s for _, s in self.tone_chunks(hz, after=after))

    # loadtest.carriers.MediaTap: the fake carrier reports what it received
    def message(self, at: float, data: bytes) -> None:
        self.messages.append((at, orjson.loads(data)))

    def closed(self, at: float) -> None:
        if self.closed_at is None:
            self.closed_at = at


def caller_bursts(first_at_ms: int = 600, period_ms: int = 4000, burst_ms: int = 100) -> ToneBursts:
    """The caller's "utterances": 1 kHz bursts, each long enough to start the simulators' VAD."""
    return ToneBursts(freq_hz=CALLER_HZ, burst_ms=burst_ms, period_ms=period_ms, first_at_ms=first_at_ms)


@dataclass
class Observed:
    result: CallResult
    tap: CarrierTap

    @property
    def call_id(self) -> str:
        assert self.result.call_id, self.result.errors
        return self.result.call_id


# ------------------------------------------------------------------ the rig


def tenant_document(
    spec: ProviderSpec, base_url: str, number: str, carrier: str, voice_config: dict[str, Any], fallback: bool
) -> dict[str, Any]:
    """One tenant whose number routes to an agent on ``spec``; ``fallback`` adds echo as second choice."""
    agent_voice = dict(voice_config)
    if fallback:
        agent_voice["providers"] = {"echo": {}}
    return {
        "client_users": [{"email": OWNER, "name": "Owner"}],
        "platform_providers": [
            {
                "provider": spec.name,
                "api_key": spec.api_key,
                "priority": 1,
                "config": {"base_url": base_url, "tools": {TOOL_NAME: TOOL_RESULT}},
            }
        ],
        "workspaces": [
            {
                "name": f"{spec.name} e2e",
                "owner": OWNER,
                "status": "active",
                "subscription_tier": "professional",
                "phone_numbers": [{"number": number, "provider": carrier}],
                "agents": [
                    {
                        "name": f"{spec.name} agent",
                        "phone_number": number,
                        "voice_provider": spec.name,
                        "voice_config": agent_voice,
                        "config": {},
                        "status": "live",
                    }
                ],
                "strategy": {"strategy": "specific", "fallback_enabled": fallback},
            }
        ],
    }


def _deadlines() -> dict[str, float]:
    """Each candidate may take ``CONNECT_DEADLINE_S``; with a separate per-attempt timeout setting the
    overall deadline leaves room for a fallback after a first candidate's timeout."""
    if "provider_attempt_timeout_s" in Settings.__dataclass_fields__:
        return {"provider_attempt_timeout_s": CONNECT_DEADLINE_S, "provider_connect_deadline_s": 3.0}
    return {"provider_connect_deadline_s": CONNECT_DEADLINE_S}


class ProviderRig:
    """A provider's simulator plus a gateway whose one tenant's number routes to it."""

    def __init__(self, spec: ProviderSpec, sim: Any, gw: RunningGateway, number: str, carrier: str) -> None:
        self.spec = spec
        self.sim = sim  # every simulator has .script, .faults and .records
        self.gw = gw
        self.number = number
        self.carrier = carrier

    @property
    def script(self) -> Script:
        return self.sim.script

    @property
    def faults(self) -> Faults:
        return self.sim.faults

    @property
    def records(self) -> list[SessionRecord]:
        return self.sim.records

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        provider: str,
        tmp_path: Path,
        telnyx_api: TelnyxApi,
        *,
        carrier: str = "twilio",
        fallback: bool = False,
        voice_config: dict[str, Any] | None = None,
        preconnect: bool = True,
    ) -> AsyncIterator[ProviderRig]:
        spec = SPECS[provider]
        sim = spec.make_simulator()
        await sim.start()
        settings, creds = make_settings(tmp_path, telnyx_api.base_url, preconnect=preconnect, **_deadlines())
        gw, runner = await start_gateway(settings, creds, telnyx_api)
        try:
            number = "+15550007001" if carrier == "twilio" else "+15550007002"
            voice = spec.voice_config if voice_config is None else voice_config
            doc = tenant_document(spec, sim.http_url, number, carrier, voice, fallback)
            await provision(gw.ctx.db, doc, gw.ctx.box, now=int(time.time()))
            yield cls(spec, sim, gw, number, carrier)
        finally:
            await stop_gateway(gw, runner)
            await sim.stop()

    async def call(self, **plan: Any) -> Observed:
        """Place one call to the tenant's number; ``plan`` are ``CallPlan`` fields."""
        tap = CarrierTap()
        async with aiohttp.ClientSession() as http:
            result = await place_call(
                http,
                self.gw.url,
                CallPlan(carrier=self.carrier, to=self.number, **plan),  # type: ignore[arg-type]
                credentials=self.gw.credentials,
                telnyx_api=self.gw.telnyx_api,
                tap=tap,
            )
        return Observed(result, tap)

    # -- rows ------------------------------------------------------------------------------------
    async def events(self, call_id: str) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.gw.rows(
            "SELECT event_type, event_data FROM call_events WHERE call_id = ? ORDER BY id", (call_id,)
        )
        return [(str(r["event_type"]), orjson.loads(str(r["event_data"] or "{}"))) for r in rows]

    async def events_of(self, call_id: str, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in await self.events(call_id) if k == kind]

    async def closed_call(self, call_id: str) -> dict[str, Any]:
        """The call's row once the gateway closed it (billing and the final update flushed)."""
        rows: list[dict[str, object]] = []
        for _ in range(100):
            rows = await self.gw.rows("SELECT * FROM calls WHERE id = ?", (call_id,))
            if rows and rows[0]["ended_at"] is not None:
                return dict(rows[0])
            await asyncio.sleep(0.05)
        raise AssertionError(f"call {call_id} never closed: {rows}")

    async def fatal_errors(self, call_id: str) -> list[dict[str, Any]]:
        """The call's ``error`` events: all from this provider, the last one fatal (it ended the session).
        OpenAI reports a server error event (not fatal by itself) before the close that is."""
        errors = await self.events_of(call_id, "error")
        assert errors and all(e["provider"] == self.spec.name for e in errors), errors
        assert errors[-1]["fatal"] is True, errors
        return errors

    async def usage(self, call_id: str) -> list[dict[str, object]]:
        return await self.gw.rows("SELECT * FROM usage_records WHERE call_id = ?", (call_id,))

    async def assert_recorded(self, call_id: str, *, status: str, provider: str) -> dict[str, Any]:
        """The closed row names the provider that ended up serving the call and has usage rows."""
        call = await self.closed_call(call_id)
        assert call["status"] == status, call
        assert call["voice_provider_used"] == provider, call
        usage = await self.usage(call_id)
        assert [u["resource_type"] for u in usage].count("call_minutes") == 1, usage
        return call


class SessionWatch:
    """Notes when the simulator's last live session ended (polled; the simulator runs in this loop)."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self.closed_at: float | None = None
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        # Polling: the simulators expose a session count, not an event (5 ms is far below the 1 s asked).
        while not self.sim.sessions_active:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        while self.sim.sessions_active:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        self.closed_at = time.monotonic()

    async def wait(self, within_s: float) -> float:
        await asyncio.wait_for(asyncio.shield(self._task), within_s)
        assert self.closed_at is not None
        return self.closed_at
