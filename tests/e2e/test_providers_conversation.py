"""Each provider end to end: fake carrier → gateway → adapter → simulator and back, over real sockets.

Turn-taking and audio paths: greeting-first and caller-first turns, a tool call, μ-law passthrough
(nothing transcoded) and PCM agents (transcoded both ways, the caller's tone still comes back).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.carriers.telnyx_api import TelnyxApi
from tests.e2e.provider_fixtures import (
    CALLER_HZ,
    GREETING_HZ,
    PCM_PROVIDERS,
    PROVIDERS,
    SPECS,
    TOOL_NAME,
    TOOL_PROVIDERS,
    TOOL_RESULT,
    ProviderRig,
    caller_bursts,
)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_greeting_first_turn_passes_mulaw_through(
    provider: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    async with ProviderRig.open(provider, tmp_path, telnyx_api) as rig:
        stats = rig.gw.ctx.stats
        transcoded = stats.frames.transcoded
        rig.script.greeting_ms = 200
        seen = await rig.call(duration_s=1.0, audio=caller_bursts(first_at_ms=300), drain_s=0.4)
        result, tap = seen.result, seen.tap
        assert not result.errors, result.errors

        greeting = tap.tone_times(GREETING_HZ)
        echo = tap.tone_times(CALLER_HZ)
        assert greeting, "the agent greets before the caller says anything"
        assert echo and greeting[0] < echo[0], "then answers the caller's utterance"
        assert result.bursts_answered, "the echoed burst is detected by the carrier"
        assert stats.frames.transcoded == transcoded, "μ-law both ways: not one frame transcoded"
        assert result.clears_received == 0, "speaking after the greeting was heard is a turn, not a barge-in"
        assert not await rig.events_of(seen.call_id, "interruption")
        assert not [m for m in rig.records[-1].messages if "truncate" in str(m)], "nothing heard is unsaid"

        connected = await rig.events_of(seen.call_id, "provider_connected")
        assert len(connected) == 1
        assert connected[0]["provider"] == provider
        assert connected[0]["passthrough"] is True, connected
        assert connected[0]["input_format"] == connected[0]["output_format"] == "mulaw/8000"
        call = await rig.assert_recorded(seen.call_id, status="completed", provider=provider)
        for line in rig.spec.transcripts:
            assert line in str(call["transcription"]), call["transcription"]
        assert rig.records[-1].audio_frames > 0


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_caller_first_turn(provider: str, tmp_path: Path, telnyx_api: TelnyxApi) -> None:
    """The agent waits for the caller; where the protocol has tools, the first utterance calls one."""
    spec = SPECS[provider]
    voice_config = {**spec.voice_config, **(spec.caller_first or {})}
    async with ProviderRig.open(provider, tmp_path, telnyx_api, voice_config=voice_config) as rig:
        if spec.caller_first is None:  # Retell/Bolna: who speaks first is the provider-side agent's setting
            rig.script.greeting_first = False
        rig.script.tool_after = 1 if provider in TOOL_PROVIDERS else None
        seen = await rig.call(duration_s=1.0, audio=caller_bursts(first_at_ms=200), drain_s=0.4)
        result, tap = seen.result, seen.tap
        assert not result.errors, result.errors
        assert not tap.tone_times(GREETING_HZ), "no greeting: the agent waits for the caller"
        assert tap.tone_times(CALLER_HZ) and result.bursts_answered, "the caller's utterance is answered"
        await rig.assert_recorded(seen.call_id, status="completed", provider=provider)
        record = rig.records[-1]
        assert not record.violations, record.violations
        if provider in TOOL_PROVIDERS:
            tools = await rig.events_of(seen.call_id, "tool_call")
            assert len(tools) == 1, tools
            assert tools[0]["provider"] == provider
            assert tools[0]["name"] == TOOL_NAME
            assert tools[0]["arguments"] == {"order_id": "A-17"}
            assert tools[0]["result"] == TOOL_RESULT
            assert len(record.tool_results) == 1, "the simulator got the tool's answer"


@pytest.mark.parametrize("provider", PCM_PROVIDERS)
async def test_pcm_agent_is_transcoded_both_ways(
    provider: str, tmp_path: Path, telnyx_api: TelnyxApi
) -> None:
    voice_config = SPECS[provider].pcm_voice_config
    async with ProviderRig.open(provider, tmp_path, telnyx_api, voice_config=voice_config) as rig:
        stats = rig.gw.ctx.stats
        transcoded = stats.frames.transcoded
        rig.script.greeting_ms = 200
        seen = await rig.call(duration_s=1.0, audio=caller_bursts(first_at_ms=300), drain_s=0.4)
        result, tap = seen.result, seen.tap
        assert not result.errors, result.errors
        connected = (await rig.events_of(seen.call_id, "provider_connected"))[0]
        assert connected["passthrough"] is False, connected
        assert connected["input_format"].startswith("pcm16/"), connected
        assert stats.frames.transcoded > transcoded + 50, "every caller frame and every agent chunk converted"
        assert rig.records[-1].audio_frames > 0
        assert tap.tone_times(GREETING_HZ), "the PCM greeting reaches the caller as μ-law"
        assert result.bursts_answered, "the caller's tone survives μ-law → PCM → μ-law"
        await rig.assert_recorded(seen.call_id, status="completed", provider=provider)
