"""Each provider end to end when it fails: an error mid-call (fail over, or the call fails) and a
handshake that never completes within the connect deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.carriers.telnyx_api import TelnyxApi
from tests.e2e.provider_fixtures import (
    CALLER_HZ,
    CONNECT_DEADLINE_S,
    PROVIDERS,
    ProviderRig,
    caller_bursts,
)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_error_mid_call_fails_over_to_the_second_provider(
    provider: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    async with ProviderRig.open(provider, tmp_path, telnyx_api, fallback=True) as rig:
        rig.faults.error_after_s = 0.4
        bursts = caller_bursts(first_at_ms=700, period_ms=300)
        seen = await rig.call(duration_s=1.4, audio=bursts, drain_s=0.2)
        result, tap = seen.result, seen.tap
        assert not result.errors, result.errors
        await rig.fatal_errors(seen.call_id)
        failovers = await rig.events_of(seen.call_id, "failover")
        assert len(failovers) == 1 and failovers[0]["from"] == provider, failovers
        connected = [e["provider"] for e in await rig.events_of(seen.call_id, "provider_connected")]
        assert connected == [provider, "echo"]
        assert tap.tone_times(CALLER_HZ) and result.bursts_answered, "the second provider answers the caller"
        assert result.ended_by == "carrier"
        await rig.assert_recorded(seen.call_id, status="completed", provider="echo")
        assert rig.records[-1].ended_by == "error"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_error_mid_call_without_fallback_fails_the_call(
    provider: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    async with ProviderRig.open(provider, tmp_path, telnyx_api, fallback=False) as rig:
        rig.faults.error_after_s = 0.3
        seen = await rig.call(duration_s=3.0, hangup=False, audio=caller_bursts())
        result = seen.result
        assert not result.errors, result.errors
        assert result.ended_by == "gateway"
        await rig.fatal_errors(seen.call_id)
        ended = (await rig.events_of(seen.call_id, "ended"))[0]
        assert ended["status"] == "failed" and ended["reason"].startswith("provider_lost:error:"), ended
        assert ended["providers_tried"] == [provider]
        await rig.assert_recorded(seen.call_id, status="failed", provider=provider)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_handshake_timeout_is_a_failed_attempt_of_kind_timeout(
    provider: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    # Without a pre-connection the session itself connects, so the fallback gets no head start.
    async with ProviderRig.open(provider, tmp_path, telnyx_api, fallback=True, preconnect=False) as rig:
        rig.faults.handshake_delay_s = CONNECT_DEADLINE_S + 0.3
        bursts = caller_bursts(period_ms=300)
        seen = await rig.call(duration_s=CONNECT_DEADLINE_S + 0.7, audio=bursts, drain_s=0.2)
        result = seen.result
        assert not result.errors, result.errors
        attempts = await rig.events_of(seen.call_id, "provider_attempt")
        assert attempts and attempts[0]["provider"] == provider, attempts
        assert attempts[0]["result"] == "failed" and attempts[0]["kind"] == "timeout", attempts
        connected = [e["provider"] for e in await rig.events_of(seen.call_id, "provider_connected")]
        assert connected == ["echo"], "the fallback serves the call"
        assert result.bursts_answered, "the caller is answered once the fallback is connected"
        await rig.assert_recorded(seen.call_id, status="completed", provider="echo")
