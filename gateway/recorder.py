"""Call rows to the storage writer without ever awaiting on the audio path, and without losing one.

``statement()`` enqueues with ``put_nowait``. When the writer is full (the database is slow or
down) rows wait, in order, in a local backlog that one background task feeds to the writer with
``await put``. The backlog is bounded too: past ``max_backlog`` rows they are appended to a spill
file (``<spill_dir>/recorder-<pid>.jsonl``, one ``[sql, params]`` per line) and replayed from it
once the backlog has drained, so a long outage costs disk, not memory, and order holds
(backlog, then spill file, then whatever came after). A spill file left by a process that died
is replayed at the next start (``replay_spill_files``) before crashed calls are recovered.

The spill file is trusted local state, like ``var/secret.key`` beside it (mode 0600).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from pathlib import Path
from typing import IO, Any

import orjson

from storage.calls import insert_event_stmt
from storage.db import Database
from storage.ids import now_s
from storage.writer import Statement, Writer, WriterFull

log = logging.getLogger(__name__)

_REPLAY_CHUNK = 500  # spilled rows read and handed to the writer at a time
_REPLAYABLE = ("INSERT INTO ", "UPDATE ")  # what a spill file may contain


class CallRecorder:
    def __init__(self, writer: Writer, *, spill_dir: Path | None, max_backlog: int) -> None:
        """``max_backlog``: rows held in memory behind a full writer (``VOICEGW_RECORDER_BACKLOG``);
        ``spill_dir`` None keeps them all in memory instead."""
        self.writer = writer
        self._backlog: deque[Statement] = deque()
        self._max_backlog = max_backlog
        self._spill_path = None if spill_dir is None else spill_dir / f"recorder-{os.getpid()}.jsonl"
        self._spill: IO[bytes] | None = None  # open while rows wait on disk
        self.spilled = 0  # rows ever written to the spill file
        self._drainer: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Rows waiting in memory behind the writer."""
        return len(self._backlog)

    def event(self, call_id: str, event_type: str, data: dict[str, Any] | None) -> None:
        self.statement(insert_event_stmt(call_id, event_type, data, now_s()))

    def statement(self, stmt: Statement) -> None:
        if self._spill is not None:
            self._write_spill(stmt)  # keep order behind what is already on disk
            return
        if self._backlog:
            self._hold(stmt)  # keep order behind what is already waiting
            return
        try:
            self.writer.put_nowait(stmt)
        except WriterFull:
            self._hold(stmt)
            if self._drainer is None or self._drainer.done():
                log.warning("writer full: buffering call rows until it catches up")
                self._drainer = asyncio.get_running_loop().create_task(self._drain())

    def _hold(self, stmt: Statement) -> None:
        if len(self._backlog) < self._max_backlog or self._spill_path is None:
            self._backlog.append(stmt)
            return
        log.warning(
            "call-row backlog full (%d rows): spilling to %s until the database catches up",
            self._max_backlog,
            self._spill_path,
        )
        self._spill_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._spill_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # Unbuffered: each row is one append that lands whole, and nothing waits in a buffer that
        # a worker's os._exit would drop.
        self._spill = os.fdopen(fd, "ab", buffering=0)
        self._write_spill(stmt)

    def _write_spill(self, stmt: Statement) -> None:
        assert self._spill is not None
        try:
            line = orjson.dumps([stmt.sql, stmt.params]) + b"\n"
        except TypeError:  # a parameter JSON cannot carry: kept in memory (written ahead of the
            # spilled rows, out of order) rather than lost
            log.error("call row with a non-JSON parameter kept in memory: %s", stmt.sql[:60])
            self._backlog.append(stmt)
            return
        # One write() of a few hundred bytes to the page cache: no await, no fsync.
        self._spill.write(line)
        self.spilled += 1

    async def _drain(self) -> None:
        # Until both are empty: a row kept in memory while the spill file replays must not be
        # left behind once the drainer thinks it is done.
        while self._backlog or self._spill is not None:
            while self._backlog:
                await self.writer.put(self._backlog[0])
                self._backlog.popleft()
            if self._spill is not None:
                await self._replay_own_spill()

    async def _replay_own_spill(self) -> None:
        """Feeds the spill file to the writer; new rows keep being appended behind until EOF."""
        spill, path = self._spill, self._spill_path
        assert spill is not None and path is not None
        replayed = 0
        source = await asyncio.to_thread(open, path, "rb")
        try:
            while True:
                lines = await asyncio.to_thread(source.readlines, _REPLAY_CHUNK * 300)
                if lines and not lines[-1].endswith(b"\n"):  # an append still being written
                    source.seek(-len(lines.pop()), os.SEEK_CUR)
                if not lines:
                    if os.fstat(spill.fileno()).st_size > source.tell():
                        continue  # appended while we read
                    break  # no await since that check: nothing can be appended before the close
                for line in lines:
                    try:
                        stmt = _parse_spilled(line)
                    except (ValueError, orjson.JSONDecodeError):
                        log.error("spill file %s: skipped a line that is not a row", path)
                        continue
                    await self.writer.put(stmt)
                    replayed += 1
            spill.close()
            self._spill = None
            path.unlink()
        finally:
            source.close()
        log.warning("replayed %d spilled call row(s) into the writer", replayed)

    async def flush(self) -> None:
        """Everything recorded so far is committed when this returns."""
        if self._drainer is not None:
            await self._drainer
        await self.writer.flush()


def _parse_spilled(line: bytes) -> Statement:
    sql, params = orjson.loads(line)
    if not isinstance(sql, str) or not sql.startswith(_REPLAYABLE) or not isinstance(params, list):
        raise ValueError(f"not a spilled statement: {line[:80]!r}")
    return Statement(sql, tuple(params))


async def replay_spill_files(db: Database, spill_dir: Path) -> int:
    """At start-up: writes rows spilled by a process that ended before replaying them.

    Each file commits in one transaction and is deleted after, so a crash here replays it again
    whole rather than half. A damaged last line (the process died mid-append) is skipped.
    """
    total = 0
    for path in sorted(await asyncio.to_thread(lambda: list(spill_dir.glob("recorder-*.jsonl")))):
        stmts: list[Statement] = []
        data = await asyncio.to_thread(path.read_bytes)
        for number, line in enumerate(data.splitlines(), 1):
            try:
                stmts.append(_parse_spilled(line))
            except (ValueError, orjson.JSONDecodeError):
                log.error("%s line %d is not a spilled row; skipped", path, number)
        written = len(stmts)
        try:
            async with db.transaction() as tx:
                for stmt in stmts:
                    await tx.execute(stmt.sql, stmt.params)
        except Exception as exc:
            if db.is_transient(exc):
                raise
            # E.g. rows this process had already handed to the writer before it died: one at a
            # time, so only the rows the database refuses are left out (and logged).
            for stmt in stmts:
                try:
                    async with db.transaction() as tx:
                        await tx.execute(stmt.sql, stmt.params)
                except Exception as row_exc:
                    if db.is_transient(row_exc):
                        raise
                    written -= 1
                    log.error("spilled row refused by the database (%s): %s", row_exc, stmt.sql[:60])
        path.unlink()
        total += written
        log.warning("replayed %d call row(s) spilled to %s by an earlier process", written, path)
    return total
