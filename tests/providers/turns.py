"""The turns every adapter plays against its scripted simulator, with the assertions they share.

The simulators' scripted agent answers in tones: a 440 Hz greeting, an echo of the caller's tone,
a 660 Hz farewell. Each helper plays one turn through an open ``Call`` and checks what every
adapter must deliver; the provider modules add their wire-specific checks around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from providers.base import AudioFormat, AudioOut, Failure, Hangup, Interrupt, ProviderEvent, ToolCall
from providers.simulators.scripted_agent import say, utterance_frames
from tests.providers.harness import TOOLS, Call, assert_tone, is_audio

GREETING_HZ, ECHO_HZ, BARGE_HZ, FAREWELL_HZ = 440, 700, 900, 660


async def greeting(call: Call, fmt: AudioFormat, until: Callable[[ProviderEvent], bool]) -> bytes:
    """The agent speaks first: a 400 ms greeting tone, complete once ``until`` is seen and all is in."""
    await call.log.wait_for(until)
    await call.settle()
    audio = call.audio()
    assert abs(fmt.ms_for_bytes(len(audio)) - 400) <= 20
    assert_tone(audio, fmt, GREETING_HZ)
    return audio


async def caller_first_echo(
    call: Call,
    fin: AudioFormat,
    fout: AudioFormat,
    until: Callable[[ProviderEvent], bool],
    silent_s: float = 0.1,
) -> bytes:
    """The agent waits (``silent_s`` without audio); the caller's 600 ms utterance comes back as a
    500-800 ms echo of its tone."""
    await asyncio.sleep(silent_s)
    assert not call.log.of_type(AudioOut), "the agent spoke first"
    await say(call.session, utterance_frames(ECHO_HZ, 600, fin), fin)
    await call.log.wait_for(until)
    await call.settle()
    echo = call.audio()
    assert_tone(echo, fout, ECHO_HZ)
    assert 500 <= fout.ms_for_bytes(len(echo)) <= 800
    assert not call.log.of_type(Interrupt)  # nothing was playing when the caller started
    return echo


async def barge_in(
    call: Call, fin: AudioFormat, fout: AudioFormat, until: Callable[[ProviderEvent], bool] | None = None
) -> tuple[AudioOut, list[AudioOut]]:
    """The caller talks over a long greeting: Interrupt, then only the echo's tone (no stale greeting).

    Returns the first greeting chunk and the audio after the interruption. ``until`` marks the reply
    as complete; by default the first audio after the interruption.
    """
    greeting = await call.log.wait_for(is_audio)
    assert isinstance(greeting, AudioOut)
    await say(call.session, utterance_frames(BARGE_HZ, 500, fin), fin)
    interrupt = await call.log.wait_for(lambda e: isinstance(e, Interrupt))
    cut = call.events.index(interrupt)
    await call.log.wait_for(until or (lambda e: is_audio(e) and call.events.index(e) > cut))
    await call.settle()
    after = [e for e in call.events[cut:] if isinstance(e, AudioOut)]
    assert after, "the echo should follow the interruption"
    for chunk in after:
        assert_tone(chunk.audio.raw, fout, BARGE_HZ, tolerance=30)
    return greeting, after


async def tool_call(call: Call, fin: AudioFormat) -> ToolCall:
    """The caller's first turn makes the agent call ``lookup_order``, answered from ``config.tools``."""
    await say(call.session, utterance_frames(ECHO_HZ, 300, fin), fin)
    tool_call = await call.log.wait_for(lambda e: isinstance(e, ToolCall))
    assert isinstance(tool_call, ToolCall)
    expected = ToolCall("lookup_order", tool_call.call_id, {"order_id": "A-17"}, TOOLS["lookup_order"])
    assert tool_call == expected
    asked = call.events.index(tool_call)
    await call.log.wait_for(lambda e: is_audio(e) and call.events.index(e) > asked)
    return tool_call


async def agent_hangup(call: Call, fin: AudioFormat, fout: AudioFormat, closes: bool) -> Hangup:
    """After the caller's first turn the agent says a farewell tone and ends the call, once.

    ``closes``: the provider also closes its socket (others leave that to the gateway).
    """
    await say(call.session, utterance_frames(ECHO_HZ, 300, fin), fin)
    hangup = await call.log.wait_for(lambda e: isinstance(e, Hangup))
    assert isinstance(hangup, Hangup)
    if closes:
        await call.ends()
    assert len(call.log.of_type(Hangup)) == 1 and not call.log.of_type(Failure)
    assert_tone(call.log.of_type(AudioOut)[-1].audio.raw, fout, FAREWELL_HZ, tolerance=30)
    return hangup
