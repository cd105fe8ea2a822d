"""Fixtures: every storage test runs on SQLite (a file in tmp_path) and on PostgreSQL.

PostgreSQL comes from ``VOICEGW_TEST_PG_DSN`` (default: the local trust-auth server). The run gets
its own schema (via ``search_path``), migrated once and reset to its migrated state before each
test; tests of migrating itself get a fresh schema each. Schemas are dropped afterwards. When
the server is unreachable the PostgreSQL variants are skipped, except under ``CI=true`` where
they fail.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
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


@dataclass
class _PgTemplate:
    """One migrated schema shared by the PostgreSQL tests, reset to its migrated state per test.

    Creating and migrating a schema costs ~0.5 s of DDL; deleting a test's few rows and putting
    back the seed rows costs milliseconds.
    """

    schema: str
    delete_order: list[str]  # children before parents
    seed_rows: dict[str, list[tuple[Any, ...]]]


async def _create_template(schema: str) -> _PgTemplate | str:
    try:
        admin = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {PG_DSN} unreachable: {type(exc).__name__}: {exc}"
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
    finally:
        await admin.close()
    db = await open_database(with_search_path(PG_DSN, schema))
    try:
        await migrate(db)
        tables = [
            r[0]
            for r in await db.fetchall(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                " AND table_name <> 'schema_migrations'"
            )
        ]
        edges = await db.fetchall(
            "SELECT kcu.table_name, ccu.table_name FROM information_schema.referential_constraints rc"
            " JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = rc.constraint_name"
            "  AND kcu.constraint_schema = rc.constraint_schema"
            " JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = rc.constraint_name"
            "  AND ccu.constraint_schema = rc.constraint_schema"
            " WHERE rc.constraint_schema = current_schema()"
        )
        parents = {t: {p for c, p in edges if c == t and p != t} for t in tables}
        order: list[str] = []
        while len(order) < len(tables):  # a table goes once everything referencing it is gone
            ready = sorted(
                t
                for t in tables
                if t not in order and all(t not in parents[c] for c in tables if c not in order and c != t)
            )
            assert ready, "foreign keys form a cycle"
            order += ready
        seed_rows = {t: [tuple(r) for r in await db.fetchall(f"SELECT * FROM {t}")] for t in tables}
        return _PgTemplate(schema, order, {t: rows for t, rows in seed_rows.items() if rows})
    finally:
        await db.close()


async def _drop_schema(schema: str) -> None:
    admin = await asyncpg.connect(PG_DSN, timeout=3)
    try:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[_PgTemplate | str]:
    """The shared migrated schema, or why PostgreSQL is unavailable."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    template = asyncio.run(_create_template(schema))
    if isinstance(template, str):
        yield template
        return
    try:
        yield template
    finally:
        asyncio.run(_drop_schema(schema))


def _require_pg(template: _PgTemplate | str) -> _PgTemplate:
    if isinstance(template, str):
        if os.environ.get("CI") == "true":
            pytest.fail(template)
        pytest.skip(template)
    return template


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "test.db"))
    template = _require_pg(request.getfixturevalue("pg_template"))
    return Backend("postgresql", with_search_path(PG_DSN, template.schema), template.schema)


@pytest.fixture
async def db(backend: Backend, request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """A migrated database holding only the migrations' seed rows."""
    database = await open_database(backend.url)
    try:
        if backend.dialect == "sqlite":
            await migrate(database)
        else:
            template: _PgTemplate = request.getfixturevalue("pg_template")
            async with database.transaction() as tx:
                for table in template.delete_order:
                    await tx.execute(f"DELETE FROM {table}")
                for table, rows in template.seed_rows.items():
                    marks = ", ".join("?" * len(rows[0]))
                    await tx.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        yield database
    finally:
        await database.close()


@pytest.fixture
async def raw_db(backend: Backend) -> AsyncIterator[Database]:
    """An open, empty (never migrated) database: on PostgreSQL a schema of its own."""
    if backend.dialect == "sqlite":
        database = await open_database(backend.url)
        try:
            yield database
        finally:
            await database.close()
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(PG_DSN)
    await admin.execute(f"CREATE SCHEMA {schema}")
    database = await open_database(with_search_path(PG_DSN, schema))
    try:
        yield database
    finally:
        await database.close()
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


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
        names = [
            r[0]
            for r in await db.fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
    else:
        names = [
            r[0]
            for r in await db.fetchall(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            )
        ]
    return {
        name: sorted((tuple(row) for row in await db.fetchall(f"SELECT * FROM {name}")), key=repr)
        for name in sorted(names)
        if name != "schema_migrations"
    }
