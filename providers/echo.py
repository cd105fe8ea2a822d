"""The built-in ``echo`` provider: plays the caller's own audio back, in process.

It speaks the caller's native format (so the gateway passes frames straight through) and
honours the same event semantics as a real agent so tests can drive every session path:
``voice_config`` keys (all optional):

- ``interrupt_digit`` (default ``"*"``): a DTMF digit that makes the agent "barge in" →
  ``Interrupt`` (the gateway sends the carrier a ``clear``).
- ``hangup_digit`` (default ``"#"``): the agent says goodbye (``farewell_ms`` of the last
  caller audio replayed) and hangs up.
- ``mute_digit`` (default none): stop echoing (simulates a silent provider).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from providers.base import (
    Audio,
    AudioOut,
    Hangup,
    Interrupt,
    ProviderContext,
    ProviderEvent,
    ProviderSession,
    Transcript,
)
from providers.event_feed import EventFeed

_QUEUE_LIMIT: Final = 500  # ~10 s of 20 ms frames; the oldest frame is dropped beyond it


class EchoSession(ProviderSession):
    name = "echo"

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__()
        self.input_format = self.output_format = ctx.preferred_format
        cfg = ctx.voice_config
        self._interrupt_digit = str(cfg.get("interrupt_digit", "*"))
        self._hangup_digit = str(cfg.get("hangup_digit", "#"))
        self._mute_digit = cfg.get("mute_digit")
        self._feed = EventFeed(self)
        self._closed = False
        self._muted = False
        self.dropped = 0

    def _push(self, event: ProviderEvent) -> None:
        if self._feed.push(event) > _QUEUE_LIMIT:
            self._feed.drop_oldest()
            self.dropped += 1

    async def send_audio(self, audio: Audio) -> None:
        self.send_audio_nowait(audio)

    def send_audio_nowait(self, audio: Audio) -> bool:
        if not self._closed:
            ms = audio.duration_ms
            self.usage.audio_in_ms += ms
            if not self._muted:
                self.usage.audio_out_ms += ms
                self._push(AudioOut(audio))
        return True

    async def send_dtmf(self, digit: str) -> None:
        if digit == self._interrupt_digit:
            self._push(Interrupt("dtmf"))
        elif digit == self._hangup_digit:
            self._push(Transcript("agent", "Goodbye."))
            self._push(Hangup("agent_goodbye"))
        elif self._mute_digit is not None and digit == str(self._mute_digit):
            self._muted = True

    def events(self) -> AsyncIterator[ProviderEvent]:
        return self._feed.events()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._feed.end()


async def connect(ctx: ProviderContext) -> ProviderSession:
    return EchoSession(ctx)
