"""Pre-connect: the provider is dialled while the carrier is still fetching TwiML."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
import pytest

from providers.simulators.elevenlabs import ElevenLabsSimulator
from storage.provision import provision
from tests.e2e.conftest import RunningGateway
from tests.e2e.preconnect_rig import first_audio_after

NUMBER = "+15550005001"


def tenant(url: str) -> dict[str, object]:
    return {
        "client_users": [{"email": "pre@example.com", "name": "Pre"}],
        "platform_providers": [{"provider": "elevenlabs", "api_key": "k", "config": {"base_url": url}}],
        "workspaces": [
            {
                "name": "Preconnect",
                "owner": "pre@example.com",
                "status": "active",
                "phone_numbers": [{"number": NUMBER, "provider": "twilio"}],
                "agents": [
                    {
                        "name": "Greeter",
                        "phone_number": NUMBER,
                        "voice_provider": "elevenlabs",
                        "status": "live",
                        "config": {},
                        "voice_config": {"agent_id": "agent_greeter"},
                    }
                ],
            }
        ],
    }


@pytest.fixture
async def sim() -> AsyncIterator[ElevenLabsSimulator]:
    s = ElevenLabsSimulator()
    s.faults.handshake_delay_s = 0.3  # a provider that takes 300 ms to accept
    await s.start()
    yield s
    await s.stop()


async def test_provider_session_opens_before_the_media_socket(
    gateway: RunningGateway, sim: ElevenLabsSimulator
) -> None:
    await provision(gateway.ctx.db, tenant(sim.http_url), gateway.ctx.box, now=int(time.time()))
    _, call_id = await first_audio_after(gateway, NUMBER, carrier_delay_s=0.4)
    rows = await gateway.rows(
        "SELECT event_type, event_data FROM call_events WHERE call_id = ? ORDER BY id", (call_id,)
    )
    answered = next(orjson.loads(str(r["event_data"])) for r in rows if r["event_type"] == "answered")
    connected = next(
        orjson.loads(str(r["event_data"])) for r in rows if r["event_type"] == "provider_connected"
    )
    assert answered["preconnected"] is True
    assert connected["provider"] == "elevenlabs"
    assert len(sim.records) == 1  # one provider session: the pre-connection was used, not a second dial


async def test_unused_preconnection_is_closed(gateway: RunningGateway, sim: ElevenLabsSimulator) -> None:
    from tests.e2e.test_bad_input import answer_twilio

    await provision(gateway.ctx.db, tenant(sim.http_url), gateway.ctx.box, now=int(time.time()))
    gateway.ctx.settings.preconnect_ttl_s = 0.5
    await answer_twilio(gateway, to=NUMBER)  # the carrier never opens the media socket
    import asyncio

    for _ in range(60):
        if sim.records and sim.records[0].ended_by is not None:
            break
        await asyncio.sleep(0.1)
    assert sim.records and sim.records[0].ended_by == "client"
    assert not gateway.ctx.selector._preconnects
