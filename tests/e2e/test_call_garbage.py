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
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest

from loadtest.carriers.call import place_call
from loadtest.carriers.plan import CallPlan
from loadtest.carriers.telnyx_api import TelnyxApi
from tests.e2e.conftest import RunningGateway
from tests.e2e.provider_fixtures import ProviderRig, caller_bursts
from tests.e2e.test_bad_input import _close_code, _closed_and_billed, _started, media_msg

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


@pytest.mark.parametrize("carrier,number", [("twilio", "+15550001111"), ("telnyx", "+15550002222")])
async def test_an_echo_call_leaves_no_cycles(gateway: RunningGateway, carrier: str, number: str) -> None:
    async def closed() -> object:
        for _ in range(100):
            rows = await gateway.rows("SELECT ended_at FROM calls WHERE id = ?", (result.call_id,))
            if rows and rows[0]["ended_at"] is not None:
                return rows[0]
            await asyncio.sleep(0.05)
        raise AssertionError("the call never closed")

    with _cyclic_garbage() as garbage:
        plan = CallPlan(carrier=carrier, to=number, duration_s=1.5)  # type: ignore[arg-type]
        result = await place_call(
            gateway.http, gateway.url, plan, credentials=gateway.credentials, telnyx_api=gateway.telnyx_api
        )
        assert not result.errors and result.return_ratio > 0.95
        await _settled(closed)
    assert not garbage, garbage


@pytest.mark.parametrize("provider", ["deepgram", "openai", "elevenlabs", "retell", "vapi", "bolna"])
async def test_a_relayed_call_leaves_no_cycles(provider: str, tmp_path, telnyx_api: TelnyxApi) -> None:  # type: ignore[no-untyped-def]
    async with ProviderRig.open(provider, tmp_path, telnyx_api) as rig:
        with _cyclic_garbage() as garbage:
            seen = await rig.call(duration_s=2.0, audio=caller_bursts())
            assert not seen.result.errors, seen.result.errors
            await _settled(lambda: rig.closed_call(seen.call_id))
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


@pytest.mark.parametrize("ending", ["bad-base64", "socket-vanished"])
async def test_a_call_closed_for_bad_input_leaves_no_cycles(gateway: RunningGateway, ending: str) -> None:
    """The carrier breaks the protocol mid-call, or its socket vanishes without a close frame."""
    with _cyclic_garbage() as garbage:
        ws, target = await _started(gateway)
        for seq in range(2, 20):
            await ws.send_str(media_msg(seq=seq))
        if ending == "bad-base64":
            await ws.send_str(media_msg(payload="!!!notbase64!!!", seq=20))
            assert await _close_code(ws) == 4422
        else:
            ws._response.connection.transport.abort()  # type: ignore[union-attr]
        await _settled(lambda: _closed_and_billed(gateway, target.parameters["call_id"]))
        await ws.close()
    assert not garbage, garbage
