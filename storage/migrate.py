"""Numbered SQL migrations, applied once each, recorded in ``schema_migrations``.

Files are ``storage/migrations/NNNN_name.sql`` in SQLite's dialect (0001 is the seed schema
verbatim). For PostgreSQL each file is translated mechanically when loaded: INTEGER → BIGINT
(epoch seconds outgrow int4 in 2038), REAL → DOUBLE PRECISION; CHECKs, foreign keys with their
ON DELETE actions, UNIQUEs, defaults and indexes carry over unchanged. Each migration runs in one
transaction together with its ``schema_migrations`` row, under a lock (SQLite's write lock,
a PostgreSQL advisory lock), so concurrent starters apply it exactly once.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from storage.db import Database, Dialect, Executor
from storage.ids import now_s

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
_ADVISORY_LOCK_KEY = 0x766F696365  # "voice": any fixed bigint shared by every gateway process

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, dialect: Dialect) -> list[str]:
        return split_statements(self.sql if dialect == "sqlite" else to_postgres_ddl(self.sql))


def load_migrations() -> list[Migration]:
    """Every migration shipped in the package, by version."""
    found = []
    for entry in resources.files("storage").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def split_statements(script: str) -> list[str]:
    """Splits a script at statement ends, as SQLite's own parser sees them."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statement = buffer.strip()
            if _strip_comments(statement).strip():
                statements.append(statement)
            buffer = ""
    if _strip_comments(buffer).strip():
        raise ValueError(f"unterminated SQL statement: {buffer.strip()[:80]!r}")
    return statements


_TOKENS = re.compile(r"'(?:[^']|'')*'|--[^\n]*|[^'-]+|-")
_PG_TYPES = (
    (re.compile(r"\bINTEGER\b", re.IGNORECASE), "BIGINT"),
    (re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
)


def _strip_comments(sql: str) -> str:
    return "".join(t for t in _TOKENS.findall(sql) if not t.startswith("--"))


def to_postgres_ddl(script: str) -> str:
    """SQLite DDL → PostgreSQL DDL: type names only, never inside string literals; comments go."""
    out = []
    for token in _TOKENS.findall(script):
        if token.startswith("--"):
            continue
        if not token.startswith("'"):
            for pattern, replacement in _PG_TYPES:
                token = pattern.sub(replacement, token)
        out.append(token)
    return "".join(out)


async def applied_versions(db: Executor) -> set[int]:
    rows = await db.fetchall("SELECT version FROM schema_migrations")
    return {int(row[0]) for row in rows}


async def migrate(db: Database) -> list[int]:
    """Applies pending migrations; returns the versions applied now (empty when up to date)."""
    create = _CREATE_MIGRATIONS_TABLE
    if db.dialect == "postgresql":
        create = to_postgres_ddl(create)
    await db.execute(create)
    applied_now = []
    for migration in load_migrations():
        async with db.transaction() as tx:
            if db.dialect == "postgresql":
                await tx.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_LOCK_KEY,))
            if migration.version in await applied_versions(tx):
                continue
            for statement in migration.statements(db.dialect):
                await tx.execute(statement)
            await tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now_s()),
            )
        log.info("applied migration %04d_%s", migration.version, migration.name)
        applied_now.append(migration.version)
    return applied_now
