"""One small async database interface over SQLite (embedded default) and PostgreSQL (multi-node).

SQL is written once, with ``?`` placeholders, in the subset both engines accept (``ON CONFLICT``
upserts, ``excluded.col``, ``LIMIT``); the PostgreSQL backend rewrites ``?`` to ``$n``. Rows are
``sqlite3.Row`` or ``asyncpg.Record``: both index by position and by column name.

SQLite runs in WAL mode with ONE writer connection (every write and every transaction, serialized
by a lock) and one reader connection (plain reads never wait for a write transaction). A third
connection checkpoints the WAL in the background, so commits on the writer never pay for copying
pages into the database file (see ``_checkpoint_loop``).
PostgreSQL uses an asyncpg pool. ``is_transient`` tells the writer which failures to retry.

URLs: ``path/to.db``, ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``, ``:memory:``,
``postgresql://user@host:port/db`` (asyncpg passes unknown query parameters such as
``?search_path=x`` on as server settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import aiosqlite
import asyncpg
from setproctitle import setthreadtitle

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgresql"]
Params = Sequence[Any]


class Row(Protocol):
    """What both ``sqlite3.Row`` and ``asyncpg.Record`` offer."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def keys(self) -> Any: ...


class Executor(ABC):
    """Statement execution; a Database and an open transaction both offer it."""

    dialect: Dialect

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> None: ...

    @abstractmethod
    async def executemany(self, sql: str, seq: Iterable[Params]) -> None: ...

    @abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


class Database(Executor):
    """A connected backend. Outside ``transaction()`` each statement commits on its own."""

    url: str

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Executor]:
        """``async with db.transaction() as tx:`` — commit on success, roll back on error."""

    @abstractmethod
    def is_transient(self, exc: BaseException) -> bool:
        """True when retrying the same work later may succeed (locked, busy, connection lost)."""

    @abstractmethod
    async def close(self) -> None: ...


# ---------------------------------------------------------------- SQLite


class _SqliteExecutor(Executor):
    dialect: Dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> None:
        cursor = await self._conn.execute(sql, params)
        await cursor.close()

    async def executemany(self, sql: str, seq: Iterable[Params]) -> None:
        cursor = await self._conn.executemany(sql, seq)
        await cursor.close()

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._conn.execute(sql, params) as cursor:
            row: Row | None = await cursor.fetchone()
            return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())


_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")


class SqliteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(
        self,
        url: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        checkpointer: aiosqlite.Connection | None = None,
    ) -> None:
        self.url = url
        self._writer = _SqliteExecutor(writer)
        self._reader = _SqliteExecutor(reader)
        self._writer_conn = writer
        self._reader_conn = reader
        self._write_lock = asyncio.Lock()
        self._checkpoint_task: asyncio.Task[None] | None = None
        if checkpointer is not None:
            self._checkpoint_task = asyncio.get_running_loop().create_task(
                self._checkpoint_loop(checkpointer), name="sqlite-checkpoint"
            )

    @staticmethod
    async def _checkpoint_loop(conn: aiosqlite.Connection) -> None:
        """Copies committed WAL pages into the database file off the writer's path.

        With SQLite's automatic checkpoint the COMMIT that crosses the threshold copies the
        pages itself, stalling the writer (a burst of call events over many calls dirties many
        index pages). A PASSIVE checkpoint on its own connection and thread runs beside the
        writer and never blocks it; ``wal_autocheckpoint`` stays on as a backstop should this
        loop fall behind. Another process checkpointing at the same time is not an error.
        """
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_INTERVAL_S)
                try:
                    await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.OperationalError as exc:  # busy: another checkpoint is running
                    log.debug("WAL checkpoint skipped: %s", exc)
        finally:
            await conn.close()

    async def execute(self, sql: str, params: Params = ()) -> None:
        async with self._write_lock:
            await self._writer.execute(sql, params)

    async def executemany(self, sql: str, seq: Iterable[Params]) -> None:
        async with self._write_lock:
            await self._writer.executemany(sql, seq)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self._reader.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._reader.fetchall(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._write_lock:
            # IMMEDIATE takes the write lock up front, so "database is locked" surfaces here,
            # before any work, rather than half-way through.
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException:
                if self._writer_conn.in_transaction:
                    await self._writer.execute("ROLLBACK")
                raise

    def is_transient(self, exc: BaseException) -> bool:
        if isinstance(exc, sqlite3.OperationalError):
            message = str(exc).lower()
            return any(word in message for word in _SQLITE_TRANSIENT)
        return False

    async def close(self) -> None:
        if self._checkpoint_task is not None:
            self._checkpoint_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint_task
        await self._reader_conn.close()
        await self._writer_conn.close()


def sqlite_path(url: str) -> str:
    """The file path a SQLite URL names (``sqlite:///rel``, ``sqlite:////abs``, or a bare path)."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite://"):
        raise ValueError(f"unsupported SQLite URL {url!r}: use sqlite:///path or a plain path")
    return url


CHECKPOINT_INTERVAL_S = 0.5
WAL_AUTOCHECKPOINT_PAGES = 20_000
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024


# How much lower than the event loop the SQLite connection threads run (Linux nice steps, capped at
# 19). They share the gateway's core with the audio, and their work comes in bursts (a ramp of call
# set-ups, a WAL checkpoint after it). At +19 the scheduler gives them ~1.5 % of the core while the
# loop is runnable and all of it while the loop waits, so storage catches up without delaying
# frames. Measured at 800-1000 echo calls on one core: the loop's run-queue wait over a run fell
# from ~1.7 s to ~0.85 s at +10 and ~0.4 s at +19; the storage threads' CPU stayed ~1.6 s.
STORAGE_THREAD_NICE = 19


class _StorageThreadConnection(sqlite3.Connection):
    """sqlite3 connection that lowers its creating thread's CPU priority and names it: aiosqlite
    calls the connector in the connection's own worker thread, so that thread is the one lowered
    and named (``top -H``, ``/proc/<pid>/task/*/comm``, py-spy show the role, not ``python3``)."""

    thread_title: ClassVar[str] = "vgw-db"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lower_thread_priority(STORAGE_THREAD_NICE)
        setthreadtitle(self.thread_title)


class _WriterConnection(_StorageThreadConnection):
    thread_title = "vgw-db-writer"


class _ReaderConnection(_StorageThreadConnection):
    thread_title = "vgw-db-reader"


class _CheckpointConnection(_StorageThreadConnection):
    thread_title = "vgw-db-checkpt"


def lower_thread_priority(steps: int) -> None:
    """Raises the calling thread's nice value by ``steps`` (Linux: a thread is a task with its own
    nice). Elsewhere, or where the system refuses, the thread keeps its priority."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except OSError as exc:
        log.debug("storage thread keeps its priority: %s", exc)


async def _sqlite_connect(
    path: str, busy_timeout_ms: int, role: type[_StorageThreadConnection] = _WriterConnection
) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None, factory=role)
    conn.row_factory = sqlite3.Row
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA foreign_keys=ON",
        f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
        # NORMAL in WAL mode: a crash loses at most the last commits, never corrupts.
        "PRAGMA synchronous=NORMAL",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA cache_size=-16000",
        # Backstop only: the background checkpointer keeps the WAL far below this (pages of 4 KiB).
        f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}",
        # Once checkpointed, a WAL file grown by a burst is truncated back to this size.
        f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}",
    ):
        await conn.execute(pragma)
    return conn


async def open_sqlite(url: str, *, busy_timeout_ms: int = 5000) -> SqliteDatabase:
    path = sqlite_path(url)
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = await _sqlite_connect(path, busy_timeout_ms)
    # An in-memory database is private to its connection: read through the writer then.
    reader = writer if path == ":memory:" else await _sqlite_connect(path, busy_timeout_ms, _ReaderConnection)
    if reader is not writer:
        await reader.execute("PRAGMA query_only=ON")
    checkpointer = (
        None if path == ":memory:" else await _sqlite_connect(path, busy_timeout_ms, _CheckpointConnection)
    )
    return SqliteDatabase(url, writer, reader, checkpointer)


# ---------------------------------------------------------------- PostgreSQL

_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?")


@lru_cache(maxsize=2048)
def to_postgres_placeholders(sql: str) -> str:
    """``?`` → ``$1, $2, ...``, leaving quoted strings, identifiers and comments alone."""
    counter = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal counter
        if match.group(0) != "?":
            return match.group(0)
        counter += 1
        return f"${counter}"

    return _PLACEHOLDER.sub(replace, sql)


class _PgExecutor(Executor):
    dialect: Dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self._conn = conn  # an asyncpg Pool or Connection: same query methods

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self._conn.execute(to_postgres_placeholders(sql), *params)

    async def executemany(self, sql: str, seq: Iterable[Params]) -> None:
        await self._conn.executemany(to_postgres_placeholders(sql), seq)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._conn.fetchrow(to_postgres_placeholders(sql), *params)
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.fetch(to_postgres_placeholders(sql), *params))


_PG_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
)


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.url = url
        self._pool = pool
        self._direct = _PgExecutor(pool)

    async def execute(self, sql: str, params: Params = ()) -> None:
        await self._direct.execute(sql, params)

    async def executemany(self, sql: str, seq: Iterable[Params]) -> None:
        await self._direct.executemany(sql, seq)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self._direct.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._direct.fetchall(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PgExecutor(conn)

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, _PG_TRANSIENT)

    async def close(self) -> None:
        await self._pool.close()


async def open_postgres(url: str, *, min_size: int = 1, max_size: int = 10) -> PostgresDatabase:
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
    return PostgresDatabase(url, pool)


async def open_database(url: str, *, busy_timeout_ms: int = 5000) -> Database:
    """Connects to the backend the URL names (see the module docstring for URL forms)."""
    if url.startswith(("postgresql://", "postgres://")):
        return await open_postgres(url)
    return await open_sqlite(url, busy_timeout_ms=busy_timeout_ms)
