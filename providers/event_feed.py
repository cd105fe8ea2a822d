"""Provider events produced by callbacks, handed to the session's pump in order.

A provider whose events come from callbacks (the echo provider on each caller frame, WebSocket
adapters on each parsed message) must not spend a task switch per event: while the pump is
parked and nothing is queued, the event goes straight to ``session.deliver_now`` (which plays
agent audio at once); otherwise it is queued and the pump woken, so order always holds.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

from providers.base import Hangup, ProviderEvent, ProviderSession


class EventFeed:
    """The queue behind ``events()``. ``push`` returns the backlog left after it (0 when the
    event was delivered at once), so the producer can push back (pause a socket, drop audio)."""

    __slots__ = ("_ended", "_queue", "_session", "_wakeup")

    def __init__(self, session: ProviderSession) -> None:
        self._session = session
        self._queue: collections.deque[ProviderEvent] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._ended = False

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, event: ProviderEvent) -> int:
        if self._ended:
            return 0
        waiter = self._wakeup
        queue = self._queue
        if waiter is not None and not queue:  # the pump is parked in events(): nothing is in flight
            deliver = self._session.deliver_now
            if deliver is not None and deliver(event):
                return 0
        queue.append(event)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return len(queue)

    def drop_oldest(self) -> None:
        self._queue.popleft()

    def end(self) -> None:
        """No more events: ``events()`` returns once the queue is drained."""
        self._ended = True
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def events(self) -> AsyncIterator[ProviderEvent]:
        """Queued events in order; ends after a ``Hangup`` or once ``end()`` was called."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            while queue:
                event = queue.popleft()
                yield event
                if type(event) is Hangup:
                    return
            if self._ended:
                return
            self._wakeup = loop.create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
