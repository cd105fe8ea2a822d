"""Provider events produced by callbacks, handed to the session's pump in order.

A provider whose events come from callbacks (the echo provider on each caller frame, WebSocket
adapters on each parsed message) must not spend a task switch per event: while the pump is
parked and nothing is queued, the event goes straight to ``session.deliver_now`` (which plays
agent audio at once); otherwise it is queued and the pump woken, so order always holds.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from providers.base import Hangup, ProviderEvent, ProviderSession


class EventFeed:
    """The queue behind ``events()``. ``push`` returns the backlog left after it (0 when the
    event was delivered at once), so the producer can push back (pause a socket, drop audio);
    ``on_drained`` (e.g. resume reading that socket) runs each time the pump takes the next event
    with fewer than ``drained_below`` left."""

    def __init__(
        self,
        session: ProviderSession,
        on_drained: Callable[[], None] | None = None,
        drained_below: int = 0,
    ) -> None:
        self._session: ProviderSession | None = session  # dropped at end(): it holds this feed
        self._queue: collections.deque[ProviderEvent] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._ended = False
        self._hung_up = False
        self._on_drained = on_drained
        self._drained_below = drained_below

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, event: ProviderEvent) -> int:
        if self._ended:
            return 0
        waiter = self._wakeup
        queue = self._queue
        session = self._session
        if waiter is not None and not queue and session is not None:  # the pump is parked: nothing in flight
            deliver = session.deliver_now
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
        self._session = None
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def events(self) -> EventFeed:
        """Queued events in order; ends after a ``Hangup`` or once ``end()`` was called.
        The feed is its own iterator (a class, not an async generator: mypyc compiles it)."""
        return self

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> ProviderEvent:
        """The next event, waiting for one."""
        if self._hung_up:
            raise StopAsyncIteration
        queue = self._queue
        on_drained = self._on_drained
        if on_drained is not None and len(queue) < self._drained_below:
            on_drained()
        while not queue:
            if self._ended:
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._wakeup = waiter
            try:
                await waiter
            finally:
                self._wakeup = None
        event = queue.popleft()
        if type(event) is Hangup:
            self._hung_up = True
        return event
