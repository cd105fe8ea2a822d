"""Call events to the storage writer without ever awaiting on the audio path.

``event()`` enqueues with ``put_nowait``; if the writer is full (back-pressure) the statement
goes to a local backlog that one background task feeds to the writer with ``await put`` — so a
slow database delays rows, never audio, and never loses one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from storage.calls import insert_event_stmt
from storage.ids import now_s
from storage.writer import Statement, Writer, WriterFull

log = logging.getLogger(__name__)


class CallRecorder:
    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self._backlog: deque[Statement] = deque()
        self._drainer: asyncio.Task[None] | None = None

    def event(self, call_id: str, event_type: str, data: dict[str, Any] | None) -> None:
        self.statement(insert_event_stmt(call_id, event_type, data, now_s()))

    def statement(self, stmt: Statement) -> None:
        if self._backlog:
            self._backlog.append(stmt)  # keep order behind what is already waiting
            return
        try:
            self.writer.put_nowait(stmt)
        except WriterFull:
            self._backlog.append(stmt)
            if self._drainer is None or self._drainer.done():
                log.warning("writer full: buffering call rows until it catches up")
                self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._backlog:
            await self.writer.put(self._backlog[0])
            self._backlog.popleft()

    async def flush(self) -> None:
        """Everything recorded so far is committed when this returns."""
        if self._drainer is not None:
            await self._drainer
        await self.writer.flush()
