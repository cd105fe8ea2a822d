"""Fixtures: every storage test runs on SQLite (a file in tmp_path) and on PostgreSQL.

PostgreSQL comes from ``VOICEGW_TEST_PG_DSN`` (default: the local trust-auth server); each test
gets its own schema (via ``search_path``), dropped afterwards. When the server is unreachable
the PostgreSQL variants are skipped, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from storage.db import Database, open_database
from storage.migrate import migrate
from storage.provision import provision_demo
from storage.secrets import SecretBox
from storage.tenancy import NumberRoute, resolve_number

PG_DSN = os.environ.get("VOICEGW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_KEY = bytes(range(32))
NOW = 1_800_000_000

_pg_error: list[str] = []  # cached reachability verdict: [] unknown, [""] ok, [reason] down


async def _pg_unreachable() -> str:
    if not _pg_error:
        try:
            conn = await asyncpg.connect(PG_DSN, timeout=3)
            await conn.close()
            _pg_error.append("")
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            _pg_error.append(f"PostgreSQL at {PG_DSN} unreachable: {type(exc).__name__}: {exc}")
    return _pg_error[0]


def with_search_path(dsn: str, schema: str) -> str:
    parts = urlsplit(dsn)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=query + urlencode({"search_path": schema})))


@dataclass
class Backend:
    """How to reach the database under test from a second, independent connection."""

    dialect: str
    url: str
    schema: str | None = None


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Backend]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield Backend("sqlite", str(tmp_path / "test.db"))
        return
    reason = await _pg_unreachable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield Backend("postgresql", with_search_path(PG_DSN, schema), schema)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


@pytest.fixture
async def raw_db(backend: Backend) -> AsyncIterator[Database]:
    """An open, empty (unmigrated) database."""
    db = await open_database(backend.url)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def db(raw_db: Database) -> Database:
    """A migrated database."""
    await migrate(raw_db)
    return raw_db


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(TEST_KEY)


@pytest.fixture
async def demo(db: Database, box: SecretBox) -> NumberRoute:
    """The demo tenant provisioned; returns the route of +15550001111."""
    await provision_demo(db, box, now=NOW)
    route = await resolve_number(db, "+15550001111")
    assert route is not None and route.agent is not None
    return route


async def dump_tables(db: Database) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (minus schema_migrations), for before/after equality checks."""
    if db.dialect == "sqlite":
        names = [r[0] for r in await db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    else:
        names = [r[0] for r in await db.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")]
    return {
        name: sorted((tuple(row) for row in await db.fetchall(f"SELECT * FROM {name}")), key=repr)
        for name in sorted(names) if name != "schema_migrations"
    }
