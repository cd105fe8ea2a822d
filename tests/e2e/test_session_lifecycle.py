"""Regressions from the gateway review: call lifecycle edges that once went wrong."""

from __future__ import annotations

import pytest

from loadtest.carriers.telnyx_api import TelnyxApi
from tests.e2e.provider_fixtures import ProviderRig, caller_bursts


@pytest.mark.parametrize("provider", ["openai", "elevenlabs", "deepgram"])
async def test_a_long_caller_utterance_is_not_a_silent_provider(
    provider: str, tmp_path, telnyx_api: TelnyxApi
) -> None:  # type: ignore[no-untyped-def]
    """7 s of continuous caller speech: providers say nothing while the caller talks; no failover."""
    async with ProviderRig.open(provider, tmp_path, telnyx_api, fallback=True) as rig:
        rig.gw.ctx.settings.provider_silence_failover_s = 3.0
        seen = await rig.call(
            duration_s=9.0, audio=caller_bursts(first_at_ms=1000, period_ms=20000, burst_ms=7000)
        )
        row = await rig.closed_call(seen.call_id)
        assert not await rig.events_of(seen.call_id, "failover")
        assert row["voice_provider_used"] == provider


async def test_telnyx_call_is_hung_up_when_its_only_provider_dies(tmp_path, telnyx_api: TelnyxApi) -> None:  # type: ignore[no-untyped-def]
    """No fallback: the gateway itself ends the Telnyx leg over REST (the provider task once
    cancelled its own hang-up)."""
    async with ProviderRig.open("openai", tmp_path, telnyx_api, carrier="telnyx", fallback=False) as rig:
        rig.faults.error_after_s = 0.3
        seen = await rig.call(duration_s=4.0, hangup=False, audio=caller_bursts())
        assert seen.result.ended_by in ("gateway", "gateway-rest"), (seen.result.ended_by, seen.result.errors)
        assert telnyx_api.hangups == 1
        row = await rig.closed_call(seen.call_id)
        assert row["status"] == "failed"
        (ended,) = await rig.events_of(seen.call_id, "ended")
        assert ended["status"] == "failed"
