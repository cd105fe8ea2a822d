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

import asyncio
import collections
from collections.abc import AsyncIterator

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

_QUEUE_LIMIT = 500  # ~10 s of 20 ms frames; the oldest frame is dropped beyond it


class EchoSession(ProviderSession):
    name = "echo"

    def __init__(self, ctx: ProviderContext) -> None:
        super().__init__()
        self.input_format = self.output_format = ctx.preferred_format
        cfg = ctx.voice_config
        self._interrupt_digit = str(cfg.get("interrupt_digit", "*"))
        self._hangup_digit = str(cfg.get("hangup_digit", "#"))
        self._mute_digit = cfg.get("mute_digit")
        self._queue: collections.deque[ProviderEvent | None] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        self._muted = False
        self.dropped = 0

    def _push(self, event: ProviderEvent | None) -> None:
        waiter = self._wakeup
        if (
            waiter is not None  # the session's pump is parked in events(), so nothing is in flight
            and not self._queue
            and event is not None
            and self.deliver_now is not None
            and self.deliver_now(event)
        ):
            return
        if len(self._queue) >= _QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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

    async def events(self) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            while queue:
                event = queue.popleft()
                if event is None:
                    return
                yield event
                if isinstance(event, Hangup):
                    return
            if self._closed:
                return
            self._wakeup = loop.create_future()
            await self._wakeup
            self._wakeup = None

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._push(None)


async def connect(ctx: ProviderContext) -> ProviderSession:
    return EchoSession(ctx)
