"""EventFeed: direct hand-over only while the pump is parked with nothing queued; order always holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from providers.base import MULAW_8000, Audio, AudioOut, Hangup, Interrupt, ProviderEvent, ProviderSession
from providers.event_feed import EventFeed


class _Session(ProviderSession):
    name = "test"

    async def send_audio(self, audio: Audio) -> None:
        raise NotImplementedError

    def events(self) -> AsyncIterator[ProviderEvent]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


def _audio(n: int) -> AudioOut:
    return AudioOut(Audio(MULAW_8000, raw=bytes([n]) * 160))


async def test_parked_pump_gets_audio_directly_and_other_events_in_order() -> None:
    session = _Session()
    feed = EventFeed(session)
    direct: list[ProviderEvent] = []
    session.deliver_now = lambda e: type(e) is AudioOut and not direct.append(e)
    pumped: list[ProviderEvent] = []

    async def pump() -> None:
        async for event in feed.events():
            pumped.append(event)

    task = asyncio.create_task(pump())
    await asyncio.sleep(0)  # the pump parks
    first = _audio(1)
    assert feed.push(first) == 0  # taken at once, no task switch
    assert feed.push(Interrupt("barge-in")) == 1  # refused by deliver_now: queued, pump woken
    assert feed.push(_audio(2)) == 2  # something is queued: must wait its turn
    await asyncio.sleep(0)
    assert [type(e) for e in pumped] == [Interrupt, AudioOut]
    assert direct == [first]
    feed.push(Hangup("bye"))
    await asyncio.wait_for(task, 1)  # a Hangup ends events()


async def test_end_drains_the_queue_first() -> None:
    feed = EventFeed(_Session())
    pushed = [_audio(n) for n in range(3)]
    for event in pushed:
        feed.push(event)
    feed.end()
    assert [e async for e in feed.events()] == pushed
    assert feed.push(_audio(9)) == 0 and len(feed) == 0  # nothing is taken after the end
