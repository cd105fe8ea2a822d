"""Each provider end to end: barge-in, the agent hanging up, and the caller hanging up mid-response."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.carriers.telnyx_api import TelnyxApi
from tests.e2e.provider_fixtures import (
    CALLER_HZ,
    FAREWELL_HZ,
    GREETING_HZ,
    PROVIDERS,
    ProviderRig,
    SessionWatch,
    caller_bursts,
)

BARGE_IN_CASES = [(p, "twilio") for p in PROVIDERS] + [("elevenlabs", "telnyx"), ("bolna", "telnyx")]


@pytest.mark.parametrize("provider,carrier", BARGE_IN_CASES)
async def test_barge_in_then_agent_hangs_up_after_its_farewell(
    provider: str, carrier: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    """The caller talks over a long greeting (carrier gets ``clear``, then none of the greeting), is
    answered, and the agent says goodbye: the farewell plays out before the gateway ends the leg."""
    async with ProviderRig.open(provider, tmp_path, telnyx_api, carrier=carrier) as rig:
        rig.script.greeting_ms = 3000  # still being sent (and heard) when the caller barges in
        rig.script.speedup = 2.0
        rig.script.hangup_after = 1
        rig.script.farewell_ms = 400
        seen = await rig.call(duration_s=4.0, hangup=False, audio=caller_bursts(first_at_ms=300))
        result, tap = seen.result, seen.tap
        assert not result.errors, result.errors

        # barge-in: a clear, and nothing of the cut greeting after it
        assert result.clears_received >= 1
        cleared_at = tap.clear_times()[0]
        assert tap.tone_times(GREETING_HZ), "the greeting was playing"
        assert not tap.tone_times(GREETING_HZ, after=cleared_at), "stale greeting audio after the clear"
        assert rig.records[-1].interruptions == 1
        interruptions = await rig.events_of(seen.call_id, "interruption")
        assert interruptions and interruptions[0]["provider"] == provider

        # the answer, then the farewell, whole, then the gateway ends the leg
        echo = tap.tone_times(CALLER_HZ, after=cleared_at)
        farewell = tap.tone_times(FAREWELL_HZ)
        assert echo and farewell and echo[0] < farewell[0], (echo, farewell)
        farewell_s = rig.script.farewell_ms / 1000
        assert tap.tone_seconds(FAREWELL_HZ) >= 0.9 * farewell_s, "the whole farewell was sent"
        if carrier == "twilio":
            assert result.ended_by == "gateway", result.ended_by
            assert tap.closed_at is not None
            assert tap.closed_at - farewell[0] >= 0.9 * farewell_s, "the farewell played out before the end"
        else:
            assert result.ended_by == "gateway-rest", result.ended_by
            assert rig.gw.telnyx_api.hangups == 1

        hangups = await rig.events_of(seen.call_id, "provider_hangup")
        assert len(hangups) == 1 and hangups[0]["provider"] == provider
        call = await rig.assert_recorded(seen.call_id, status="completed", provider=provider)
        assert int(call["duration_seconds"]) <= 3
        for line in rig.spec.transcripts:
            if line != "agent: greeting":  # a cut-off response may never get its final transcript
                assert line in str(call["transcription"]), call["transcription"]
        assert not rig.records[-1].violations, rig.records[-1].violations


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_caller_hangup_mid_response_closes_provider_promptly(
    provider: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    async with ProviderRig.open(provider, tmp_path, telnyx_api) as rig:
        rig.script.greeting_ms = 3000
        rig.script.speedup = 1.0  # the greeting streams in real time: the agent is mid-response
        watch = SessionWatch(rig.sim)
        seen = await rig.call(duration_s=0.8, drain_s=0.0)
        result, tap = seen.result, seen.tap
        assert not result.errors, result.errors
        assert result.ended_by == "carrier"
        assert result.media_started_at is not None
        hung_up_at = result.media_started_at + result.audio_s_sent
        closed_at = await watch.wait(within_s=2.0)
        lag = closed_at - hung_up_at
        assert lag < 1.0, f"the provider socket closed {lag:.2f} s after the caller hung up"

        heard = tap.tone_seconds(GREETING_HZ)
        assert 0 < heard < 2.0, "the caller left while the greeting was still coming"
        record = rig.records[-1]
        assert record.ended_by == "client", record.ended_by
        call = await rig.assert_recorded(seen.call_id, status="completed", provider=provider)
        assert call["ended_at"] is not None
        ended = await rig.events_of(seen.call_id, "ended")
        assert ended and ended[0]["reason"] == "caller_hangup", ended
