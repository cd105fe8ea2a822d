"""The async batched writer: the only way the hot path writes to the database.

Callers hand it ready-made ``Statement``s (see ``storage.calls``); ``put_nowait`` is a deque
append, never I/O. One flusher task takes up to ``max_batch`` statements every
``flush_interval_s``, groups consecutive statements with identical SQL into one ``executemany``,
and commits the whole batch in ONE transaction, in enqueue order. Plain INSERTs of a group are
sent as multi-row ``VALUES`` chunks (see ``_execute_group``).

Failures:
- transient (database locked or busy, connection lost): the transaction rolled back, so the same
  batch is retried with exponential backoff (capped at ``max_backoff_s``) until it commits;
  nothing is dropped and, since a failed attempt committed nothing, nothing is duplicated. Later
  statements wait behind it, so order holds.
- permanent (a constraint or SQL error in some statement): the batch is re-run one statement per
  savepoint in one transaction; the bad statements are logged, counted in ``stats.failures``
  and dropped (they can never succeed), the rest commit. ``commit()`` on a dropped statement
  raises ``WriteFailed``.

Memory is bounded: queued plus in-flight statements never exceed ``max_queue``; ``put_nowait``
raises ``WriterFull`` at the bound, ``put``/``commit`` wait for room (back-pressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from storage.db import Database, Executor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with ``?`` placeholders and its parameters."""

    sql: str
    params: tuple[Any, ...]
    # Rows of one INSERT group that share a cluster key are written next to each other (stable,
    # so their order holds): e.g. call events by call id, which keeps an index on call_id local.
    cluster: str | None = field(default=None, compare=False)


class WriterFull(Exception):
    """The writer holds ``max_queue`` statements; the caller must shed or wait (``put``)."""


class WriterClosed(RuntimeError):
    """The writer was closed (or never started) and accepts no more statements."""


class WriteFailed(Exception):
    """A statement was rejected by the database for good (constraint, SQL error)."""


@dataclass(frozen=True, slots=True)
class FlushInfo:
    """What one committed batch did; passed to the ``on_flush`` metrics hook."""

    rows: int
    failed: int
    latency_s: float
    retries: int
    depth_after: int


@dataclass(frozen=True, slots=True)
class WriterStats:
    rows_written: int
    batches: int
    last_flush_s: float
    avg_flush_s: float
    max_flush_s: float
    retries: int
    failures: int
    max_depth: int


@dataclass(slots=True)
class _Waiter:
    seq: int
    future: asyncio.Future[None]
    exact: bool  # commit(): fail when this very statement was dropped


_PLAIN_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+[\w.]+\s*\([^()]*\)\s*VALUES\s*(\(\s*\?(?:\s*,\s*\?)*\s*\))\s*$", re.IGNORECASE
)
_MULTI_ROW_PARAMS = 4000  # params per multi-row INSERT (SQLite >= 3.32 and PostgreSQL allow 32k)
_MULTI_ROW_MAX = 256


@lru_cache(maxsize=256)
def _multi_row_insert(sql: str) -> tuple[str, int] | None:
    """``INSERT ... VALUES (?, ?)`` → (the same INSERT with k value tuples, k), or None if not plain."""
    match = _PLAIN_INSERT.match(sql)
    if match is None:
        return None
    values = match.group(1)
    rows = min(_MULTI_ROW_MAX, _MULTI_ROW_PARAMS // values.count("?"))
    if rows < 2:
        return None
    return sql[: match.start(1)] + ", ".join([values] * rows), rows


async def _execute_group(tx: Executor, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Runs one SQL for many parameter rows, in order.

    A plain INSERT goes as multi-row ``VALUES (...), (...)`` chunks: one statement step (SQLite)
    or message (PostgreSQL) per chunk instead of per row, which is most of the cost of a burst.
    Anything else (upserts, updates) goes through ``executemany``.
    """
    multi = _multi_row_insert(sql)
    done = 0
    if multi is not None:
        multi_sql, per_chunk = multi
        while len(rows) - done >= per_chunk:
            await tx.execute(multi_sql, [v for row in rows[done : done + per_chunk] for v in row])
            done += per_chunk
    if len(rows) - done == 1:
        await tx.execute(sql, rows[done])
    elif done < len(rows):
        await tx.executemany(sql, rows[done:])


class Writer:
    def __init__(
        self,
        db: Database,
        *,
        flush_interval_s: float = 0.005,
        max_batch: int = 2000,
        max_queue: int = 100_000,
        max_backoff_s: float = 1.0,
        on_flush: Callable[[FlushInfo], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < max_batch:
            raise ValueError("need 1 <= max_batch <= max_queue")
        self._db = db
        self._flush_interval_s = flush_interval_s
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._max_backoff_s = max_backoff_s
        self._on_flush = on_flush
        self._queue: deque[Statement] = deque()
        self._in_flight = 0
        self._enqueued_seq = 0  # seq of the last statement accepted
        self._done_seq = 0  # every statement up to this seq is committed (or dropped)
        self._waiters: deque[_Waiter] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._rows_written = 0
        self._batches = 0
        self._last_flush_s = 0.0
        self._total_flush_s = 0.0
        self._max_flush_s = 0.0
        self._retries = 0
        self._failures = 0
        self._max_depth = 0

    # ------------------------------------------------------------ public API

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="storage-writer")

    @property
    def depth(self) -> int:
        """Statements accepted but not yet committed (queued plus the batch in flight)."""
        return len(self._queue) + self._in_flight

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            rows_written=self._rows_written,
            batches=self._batches,
            last_flush_s=self._last_flush_s,
            avg_flush_s=self._total_flush_s / self._batches if self._batches else 0.0,
            max_flush_s=self._max_flush_s,
            retries=self._retries,
            failures=self._failures,
            max_depth=self._max_depth,
        )

    def put_nowait(self, stmt: Statement) -> None:
        """Enqueues without waiting or I/O; raises ``WriterFull`` at ``max_queue``."""
        if self._closing or self._task is None:
            raise WriterClosed("writer is not running")
        depth = len(self._queue) + self._in_flight
        if depth >= self._max_queue:
            self._room.clear()
            raise WriterFull(f"writer queue full ({self._max_queue} statements)")
        self._queue.append(stmt)
        self._enqueued_seq += 1
        if depth + 1 > self._max_depth:
            self._max_depth = depth + 1
        if not self._wake.is_set():
            self._wake.set()

    async def put(self, stmt: Statement) -> None:
        """Enqueues, waiting while the writer is full."""
        while True:
            try:
                self.put_nowait(stmt)
                return
            except WriterFull:
                await self._room.wait()

    async def commit(self, stmt: Statement) -> None:
        """Enqueues and returns once the batch holding ``stmt`` committed (webhooks use this)."""
        await self.put(stmt)
        await self._wait_for(self._enqueued_seq, exact=True)

    async def flush(self) -> None:
        """Returns once everything enqueued before the call is committed."""
        await self._wait_for(self._enqueued_seq, exact=False)

    async def close(self) -> None:
        """Stops accepting statements, writes everything queued, stops the flusher.

        While the database stays unavailable this keeps retrying; bound it with
        ``asyncio.wait_for`` for a shutdown deadline (cancelling logs what was left unwritten).
        """
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        await self._task

    # ------------------------------------------------------------ flushing

    async def _wait_for(self, seq: int, *, exact: bool) -> None:
        if seq <= self._done_seq:
            return
        if self._task is None or self._task.done():
            raise WriterClosed("writer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(seq, future, exact))
        self._wake.set()
        await future

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                # Batch for a few ms, unless someone waits on a commit (a webhook answering a
                # carrier): group commit then happens at once, with whatever is queued.
                if len(self._queue) < self._max_batch and not self._closing and not self._waiters:
                    await asyncio.sleep(self._flush_interval_s)
                await self._flush_once()
        except asyncio.CancelledError as exc:
            log.warning("storage writer cancelled with %d statement(s) unwritten", self.depth)
            self._fail_waiters(exc)
            raise
        except BaseException as exc:
            log.exception("storage writer stopped with %d statement(s) unwritten", self.depth)
            self._fail_waiters(exc)
            raise

    async def _flush_once(self) -> None:
        count = min(len(self._queue), self._max_batch)
        batch = [self._queue.popleft() for _ in range(count)]
        self._in_flight = count
        first_seq = self._done_seq + 1
        started = time.perf_counter()
        retries, failed = await self._write(batch)
        latency = time.perf_counter() - started
        self._in_flight = 0
        self._done_seq += count
        self._rows_written += count - len(failed)
        self._failures += len(failed)
        self._batches += 1
        self._last_flush_s = latency
        self._total_flush_s += latency
        self._max_flush_s = max(self._max_flush_s, latency)
        self._room.set()
        self._resolve_waiters({first_seq + i for i in failed})
        if self._on_flush is not None:
            try:
                self._on_flush(FlushInfo(count - len(failed), len(failed), latency, retries, self.depth))
            except Exception:
                log.exception("writer on_flush hook failed")

    async def _write(self, batch: list[Statement]) -> tuple[int, list[int]]:
        """Commits the batch, retrying transient failures; returns (retries, dropped indexes)."""
        retries = 0
        isolate = False
        while True:
            try:
                if isolate:
                    return retries, await self._write_isolated(batch)
                await self._write_grouped(batch)
                return retries, []
            except Exception as exc:
                if not self._db.is_transient(exc):
                    if isolate:
                        raise
                    log.warning("writer batch rejected (%s); isolating bad statements", type(exc).__name__)
                    isolate = True
                    continue
                retries += 1
                self._retries += 1
                delay = min(self._max_backoff_s, 0.01 * 2 ** min(retries, 10))
                log.warning(
                    "writer flush failed (%s: %s); retry %d in %.2fs", type(exc).__name__, exc, retries, delay
                )
                await asyncio.sleep(delay)

    async def _write_grouped(self, batch: list[Statement]) -> None:
        async with self._db.transaction() as tx:
            start = 0
            while start < len(batch):
                sql = batch[start].sql
                end = start + 1
                while end < len(batch) and batch[end].sql == sql:
                    end += 1
                if end - start == 1:
                    await tx.execute(sql, batch[start].params)
                else:
                    group = batch[start:end]
                    if group[0].cluster is not None:
                        group = sorted(group, key=_cluster_key)
                    await _execute_group(tx, sql, [s.params for s in group])
                start = end

    async def _write_isolated(self, batch: list[Statement]) -> list[int]:
        failed: list[int] = []
        async with self._db.transaction() as tx:
            for index, stmt in enumerate(batch):
                if not await self._execute_in_savepoint(tx, stmt):
                    failed.append(index)
        return failed

    async def _execute_in_savepoint(self, tx: Executor, stmt: Statement) -> bool:
        await tx.execute("SAVEPOINT writer_row")
        try:
            await tx.execute(stmt.sql, stmt.params)
        except Exception as exc:
            if self._db.is_transient(exc):
                raise
            await tx.execute("ROLLBACK TO SAVEPOINT writer_row")
            await tx.execute("RELEASE SAVEPOINT writer_row")
            # Parameters may hold caller data: log the statement shape and the error only.
            log.error("writer dropped statement %.120s: %s: %s", stmt.sql, type(exc).__name__, exc)
            return False
        await tx.execute("RELEASE SAVEPOINT writer_row")
        return True

    def _resolve_waiters(self, failed_seqs: set[int]) -> None:
        while self._waiters and self._waiters[0].seq <= self._done_seq:
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            if waiter.exact and waiter.seq in failed_seqs:
                waiter.future.set_exception(WriteFailed("statement rejected by the database"))
            else:
                waiter.future.set_result(None)

    def _fail_waiters(self, exc: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                with contextlib.suppress(Exception):
                    waiter.future.set_exception(WriterClosed(f"writer stopped: {exc!r}"))


def _cluster_key(stmt: Statement) -> str:
    return stmt.cluster or ""
