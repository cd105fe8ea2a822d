"""A finished call is freed by reference counting: it leaves no reference cycle behind.

Cycles are only freed by a full garbage collection, and a full collection stops every live call's
audio while it walks the heap (``voicegw_gc_pause_seconds``). So no call may leave one: each
socket lets go of its handler's callbacks once closed, the session lets go of its playback proxies
and its provider task, a provider feed lets go of its session, Deepgram's keep-alive timer is
forgotten once cancelled. The collector is switched off while the call runs, then made to keep
what it finds, so anything of ours it would have had to free fails the test.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import pytest

from gateway.app import drain
from loadtest.carriers.call import place_call
from loadtest.carriers.markup import StreamTarget
from loadtest.carriers.plan import CallPlan, CallResult
from loadtest.carriers.telnyx_api import TelnyxApi
from providers.simulators.deepgram import DeepgramSimulator
from providers.simulators.elevenlabs import ElevenLabsSimulator
from storage.provider_configs import list_platform_configs
from storage.provision import provision
from tests.e2e import test_preconnect
from tests.e2e.conftest import RunningGateway, make_settings, start_gateway, stop_gateway
from tests.e2e.provider_fixtures import SPECS, TOOL_PROVIDERS, ProviderRig, caller_bursts
from tests.e2e.test_bad_input import (
    _close_code,
    _closed_and_billed,
    _connected,
    _started,
    answer_twilio,
    media_msg,
    start_msg,
)

OURS = ("gateway.", "providers.", "routing.", "storage.")
# Immutable values that the in-process simulators' sessions share: their own cycles hold them.
SHARED_VALUES = frozenset({"AudioFormat"})


def _ours(obj: object) -> bool:
    module = type(obj).__module__
    return (
        module.startswith(OURS)
        and not module.startswith("providers.simulators")
        and type(obj).__qualname__ not in SHARED_VALUES
    )


@contextmanager
def _cyclic_garbage() -> Iterator[Counter[str]]:
    """Counts, by type, the objects of ours that only the collector could have freed."""
    found: Counter[str] = Counter()
    gc.collect()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.update(type(o).__qualname__ for o in gc.garbage if _ours(o))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def _settled(closed: Callable[[], Awaitable[object]]) -> None:
    """The call row is closed (billing done); then the handler and sockets wind down."""
    await closed()
    await asyncio.sleep(0.3)


async def _echo_call(gw: RunningGateway, plan: CallPlan) -> CallResult:
    """One call placed like the carrier places it; returns once the call row is closed."""
    result = await place_call(gw.http, gw.url, plan, credentials=gw.credentials, telnyx_api=gw.telnyx_api)
    assert result.call_id, result.errors
    await _settled(lambda: _closed_and_billed(gw, str(result.call_id)))
    return result


@asynccontextmanager
async def _gateway_with(
    tmp_path: Path, telnyx_api: TelnyxApi, **settings: object
) -> AsyncIterator[RunningGateway]:
    configured, creds = make_settings(tmp_path, telnyx_api.base_url, **settings)
    gw, runner = await start_gateway(configured, creds, telnyx_api)
    try:
        yield gw
    finally:
        await stop_gateway(gw, runner)


@pytest.mark.parametrize("carrier,number", [("twilio", "+15550001111"), ("telnyx", "+15550002222")])
async def test_an_echo_call_leaves_no_cycles(gateway: RunningGateway, carrier: str, number: str) -> None:
    with _cyclic_garbage() as garbage:
        result = await _echo_call(gateway, CallPlan(carrier=carrier, to=number, duration_s=1.5))  # type: ignore[arg-type]
        assert not result.errors and result.return_ratio > 0.95
    assert not garbage, garbage


@pytest.mark.parametrize("carrier,number", [("twilio", "+15550001111"), ("telnyx", "+15550002222")])
async def test_an_agent_hangup_leaves_no_cycles(gateway: RunningGateway, carrier: str, number: str) -> None:
    """'*' barges in (the carrier gets ``clear``), '#' makes the agent say goodbye: the gateway ends
    the leg, a Telnyx one over the REST API."""
    plan = CallPlan(carrier=carrier, to=number, duration_s=6.0, dtmf=((0.5, "*"), (1.0, "#")), hangup=False)  # type: ignore[arg-type]
    with _cyclic_garbage() as garbage:
        result = await _echo_call(gateway, plan)
        assert result.ended_by in ("gateway", "gateway-rest"), (result.ended_by, result.errors)
        assert result.clears_received == 1
    if carrier == "telnyx":
        assert gateway.telnyx_api.hangups == 1
    assert not garbage, garbage


@pytest.mark.parametrize(
    "setting,close_code",
    [({"max_call_s": 1.0}, 1000), ({"idle_timeout_s": 0.5}, 4408)],
    ids=["max-duration", "idle-timeout"],
)
async def test_a_call_ended_by_a_deadline_leaves_no_cycles(
    setting: dict[str, float], close_code: int, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    async with _gateway_with(tmp_path, telnyx_api, **setting) as gw:
        with _cyclic_garbage() as garbage:
            ws, target = await _started(gw)
            if "max_call_s" in setting:
                for seq in range(2, 12):
                    await ws.send_str(media_msg(seq=seq))
            assert await _close_code(ws) == close_code
            await _settled(lambda: _closed_and_billed(gw, target.parameters["call_id"]))
            await ws.close()
    assert not garbage, garbage


async def test_a_call_ended_by_shutdown_leaves_no_cycles(gateway: RunningGateway) -> None:
    """The drain's deadline passes with the call still live: the gateway ends it."""
    plan = CallPlan(to="+15550001111", duration_s=10.0, hangup=False)
    with _cyclic_garbage() as garbage:
        call = asyncio.ensure_future(_echo_call(gateway, plan))
        for _ in range(100):
            if gateway.ctx.live:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await drain(gateway.ctx, 0.0)
        result = await call
        assert result.ended_by == "gateway", (result.ended_by, result.errors)
        del call
    assert not garbage, garbage


@pytest.mark.parametrize("provider", ["deepgram", "openai", "elevenlabs", "retell", "vapi", "bolna"])
async def test_a_relayed_call_leaves_no_cycles(provider: str, tmp_path, telnyx_api: TelnyxApi) -> None:  # type: ignore[no-untyped-def]
    async with ProviderRig.open(provider, tmp_path, telnyx_api) as rig:
        with _cyclic_garbage() as garbage:
            seen = await rig.call(duration_s=2.0, audio=caller_bursts())
            assert not seen.result.errors, seen.result.errors
            await _settled(lambda: rig.closed_call(seen.call_id))
    assert not garbage, garbage


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
async def test_a_tool_call_leaves_no_cycles(provider: str, tmp_path: Path, telnyx_api: TelnyxApi) -> None:
    """The caller speaks first and the agent's answer calls a client tool, which the gateway runs."""
    spec = SPECS[provider]
    voice_config = {**spec.voice_config, **(spec.caller_first or {})}
    async with ProviderRig.open(provider, tmp_path, telnyx_api, voice_config=voice_config) as rig:
        if spec.caller_first is None:
            rig.script.greeting_first = False
        rig.script.tool_after = 1
        with _cyclic_garbage() as garbage:
            seen = await rig.call(duration_s=1.0, audio=caller_bursts(first_at_ms=200), drain_s=0.4)
            assert not seen.result.errors, seen.result.errors
            await _settled(lambda: rig.closed_call(seen.call_id))
            assert len(await rig.events_of(seen.call_id, "tool_call")) == 1
    assert not garbage, garbage


@pytest.mark.parametrize("provider,carrier", [("elevenlabs", "telnyx"), ("openai", "twilio")])
async def test_a_relayed_agent_hangup_leaves_no_cycles(
    provider: str, carrier: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    """The caller barges in on the greeting, the agent answers, says goodbye and hangs up."""
    async with ProviderRig.open(provider, tmp_path, telnyx_api, carrier=carrier) as rig:
        rig.script.greeting_ms = 3000
        rig.script.speedup = 2.0
        rig.script.hangup_after = 1
        rig.script.farewell_ms = 400
        with _cyclic_garbage() as garbage:
            seen = await rig.call(duration_s=4.0, hangup=False, audio=caller_bursts(first_at_ms=300))
            assert not seen.result.errors, seen.result.errors
            assert seen.result.ended_by in ("gateway", "gateway-rest"), seen.result.ended_by
            await _settled(lambda: rig.closed_call(seen.call_id))
            assert await rig.events_of(seen.call_id, "provider_hangup")
    assert not garbage, garbage


async def test_an_unused_preconnection_leaves_no_cycles(gateway: RunningGateway) -> None:
    """The carrier fetches TwiML but never opens the media socket: the provider session dialled
    in advance is closed when its time to live runs out."""
    sim = ElevenLabsSimulator()
    await sim.start()
    try:
        tenant = test_preconnect.tenant(sim.http_url)
        await provision(gateway.ctx.db, tenant, gateway.ctx.box, now=int(time.time()))
        gateway.ctx.settings.preconnect_ttl_s = 0.5
        with _cyclic_garbage() as garbage:
            await answer_twilio(gateway, to=test_preconnect.NUMBER)
            for _ in range(60):
                if sim.records and sim.records[0].ended_by is not None:
                    break
                await asyncio.sleep(0.1)
            assert sim.records and sim.records[0].ended_by == "client"
            await asyncio.sleep(0.3)
        assert not gateway.ctx.selector._preconnects
    finally:
        await sim.stop()
    assert not garbage, garbage


@pytest.mark.parametrize("refused", [False, True], ids=["up", "refused"])
async def test_a_provider_probe_leaves_no_cycles(gateway: RunningGateway, refused: bool) -> None:
    """Probes run every few seconds whatever the traffic: each connect-and-close is freed at once."""
    sim = DeepgramSimulator()
    sim.faults.refuse_handshake = refused
    await sim.start()
    try:
        document = {
            "platform_providers": [
                {"provider": "deepgram", "api_key": "dg", "config": {"base_url": sim.http_url}}
            ]
        }
        await provision(gateway.ctx.db, document, gateway.ctx.box, now=int(time.time()))
        (config,) = [c for c in await list_platform_configs(gateway.ctx.db) if c.provider == "deepgram"]
        with _cyclic_garbage() as garbage:
            for _ in range(3):
                await gateway.ctx.selector.probe(config)
            await asyncio.sleep(0.3)
        entry = gateway.ctx.selector.board.as_json(time.monotonic())["providers"]["deepgram"]["default"]
        assert ("probe" in str(entry["last_error"])) if refused else entry["latency_ms"] is not None, entry
    finally:
        await sim.stop()
    assert not garbage, garbage


@pytest.mark.parametrize(
    "fault",
    [{"error_after_s": 0.6}, {"close_after_s": 0.6}, {"refuse_handshake": True}, {"handshake_delay_s": 5.0}],
    ids=["provider-error", "provider-dropped", "refused", "connect-timeout"],
)
async def test_a_failed_over_call_leaves_no_cycles(
    fault: dict[str, object], tmp_path, telnyx_api: TelnyxApi
) -> None:  # type: ignore[no-untyped-def]
    """Deepgram fails (mid-call or at connect) and echo takes over: the failed provider's session,
    socket and connect attempt are freed with the call."""
    async with ProviderRig.open("deepgram", tmp_path, telnyx_api, fallback=True, preconnect=False) as rig:
        rig.faults.update(fault)
        with _cyclic_garbage() as garbage:
            seen = await rig.call(duration_s=2.5, audio=caller_bursts())
            assert not seen.result.errors, seen.result.errors
            await _settled(lambda: rig.closed_call(seen.call_id))
            assert await rig.events_of(seen.call_id, "failover") or await rig.events_of(
                seen.call_id, "provider_attempt"
            )
    assert not garbage, garbage


def _raw(ws: aiohttp.ClientWebSocketResponse) -> asyncio.Transport:
    return ws._response.connection.transport  # type: ignore[union-attr,return-value]


# How a live call breaks the protocol, and the close code it gets (None: the socket just vanishes).
MID_CALL_ENDINGS: dict[
    str, tuple[Callable[[RunningGateway, aiohttp.ClientWebSocketResponse], Awaitable[None]], int | None]
] = {
    "bad-base64": (lambda gw, ws: ws.send_str(media_msg(payload="!!!notbase64!!!", seq=20)), 4422),
    "wrong-stream": (lambda gw, ws: ws.send_str(media_msg(stream_sid="MZ" + "9" * 32, seq=20)), 4403),
    "oversize": (
        lambda gw, ws: ws.send_str(media_msg(payload="A" * (gw.ctx.settings.max_frame_bytes + 10))),
        1009,
    ),
    "broken-framing": (lambda gw, ws: _write(_raw(ws), bytes([0xC1, 0x81]) + b"\0\0\0\0x"), 1002),
    "bad-close-frame": (lambda gw, ws: _write(_raw(ws), bytes([0x88, 0x81]) + b"\0\0\0\0x"), 1002),
    "socket-vanished": (lambda gw, ws: _write(_raw(ws), None), None),
}


async def _write(transport: asyncio.Transport, data: bytes | None) -> None:
    """Raw bytes on the carrier's socket, or (None) a TCP abort with no close frame."""
    if data is None:
        transport.abort()
    else:
        transport.write(data)


@pytest.mark.parametrize("ending", list(MID_CALL_ENDINGS))
async def test_a_call_closed_for_bad_input_leaves_no_cycles(gateway: RunningGateway, ending: str) -> None:
    """The carrier breaks the protocol mid-call, or its socket vanishes without a close frame."""
    breaks, close_code = MID_CALL_ENDINGS[ending]
    with _cyclic_garbage() as garbage:
        ws, target = await _started(gateway)
        for seq in range(2, 20):
            await ws.send_str(media_msg(seq=seq))
        await breaks(gateway, ws)
        if close_code is not None:
            assert await _close_code(ws) == close_code
        await _settled(lambda: _closed_and_billed(gateway, target.parameters["call_id"]))
        await ws.close()
    assert not garbage, garbage


async def test_a_refused_media_socket_leaves_no_cycles(gateway: RunningGateway) -> None:
    """Sockets refused before a call starts on them: a forged token, a second socket for a live call."""
    with _cyclic_garbage() as garbage:
        target = await answer_twilio(gateway)
        assert isinstance(target, StreamTarget)
        forged = await _connected(gateway)
        await forged.send_str(start_msg(target, token="garbage"))
        assert await _close_code(forged) == 4401
        ws, live = await _started(gateway)
        second = await _connected(gateway)
        await second.send_str(start_msg(live))
        assert await _close_code(second) == 4409
        await ws.close()
        await _settled(lambda: _closed_and_billed(gateway, live.parameters["call_id"]))
    assert not garbage, garbage
