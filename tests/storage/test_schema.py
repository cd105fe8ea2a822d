"""The migrated schema is the seed schema exactly (plus gw_ indexes); migrating is idempotent."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from storage.db import Database, open_database
from storage.migrate import load_migrations, migrate, split_statements, to_postgres_ddl

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED_SCHEMA = REPO_ROOT.parent / "shared" / "seed" / "schema.sql"


def _seed_connection() -> sqlite3.Connection:
    if not SEED_SCHEMA.exists():
        pytest.skip(f"seed schema not found at {SEED_SCHEMA} (needs ../shared next to the repo)")
    conn = sqlite3.connect(":memory:")
    conn.executescript(SEED_SCHEMA.read_text("utf-8"))
    return conn


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return sorted(r[0] for r in rows)


def _checks(create_sql: str) -> list[str]:
    """The text of every CHECK(...) clause, parentheses balanced."""
    found = []
    for match in re.finditer(r"CHECK\s*\(", create_sql, re.IGNORECASE):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(create_sql[i], 0)
            i += 1
        found.append(re.sub(r"\s+", " ", create_sql[match.end() : i - 1]).strip())
    return found


async def test_migrated_sqlite_matches_seed_schema(tmp_path: Path) -> None:
    seed = _seed_connection()
    db = await open_database(str(tmp_path / "m.db"))
    await migrate(db)
    await db.close()
    ours = sqlite3.connect(tmp_path / "m.db")
    seed_tables = _tables(seed)
    assert len(seed_tables) == 21
    extra_tables = set(_tables(ours)) - set(seed_tables) - {"schema_migrations"}
    assert set(seed_tables) <= set(_tables(ours))
    assert all(name.startswith("gw_") for name in extra_tables), extra_tables  # later migrations' own
    for table in seed_tables:
        for pragma in ("table_info", "foreign_key_list"):
            q = f"PRAGMA {pragma}({table})"
            assert ours.execute(q).fetchall() == seed.execute(q).fetchall(), (table, pragma)
        seed_indexes = {r[1]: r for r in seed.execute(f"PRAGMA index_list({table})")}
        our_indexes = {r[1]: r for r in ours.execute(f"PRAGMA index_list({table})")}
        for name, row in seed_indexes.items():
            assert our_indexes.get(name, (None,))[1:] == row[1:], (table, name)
            q = f"PRAGMA index_info({name})"
            assert ours.execute(q).fetchall() == seed.execute(q).fetchall(), (table, name)
        extra = set(our_indexes) - set(seed_indexes)
        assert all(name.startswith("gw_") for name in extra), extra
        q = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?"
        seed_sql, our_sql = seed.execute(q, (table,)).fetchone()[0], ours.execute(q, (table,)).fetchone()[0]
        assert _checks(our_sql) == _checks(seed_sql), table
    tiers = "SELECT * FROM subscription_tiers ORDER BY tier_name"
    assert ours.execute(tiers).fetchall() == seed.execute(tiers).fetchall()
    assert len(ours.execute(tiers).fetchall()) == 3


async def test_check_constraints_enforced(db: Database) -> None:
    with pytest.raises(Exception, match=r"(?i)check"):
        await db.execute(
            "INSERT INTO provider_health_status (provider, region, status, last_check)"
            " VALUES ('a', 'b', 'meh', 1)"
        )


async def test_foreign_keys_enforced_and_cascade(db: Database) -> None:
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await db.execute(
            "INSERT INTO workspaces (id, name, owner_id, created_at, updated_at)"
            " VALUES ('w', 'W', 'nobody', 1, 1)"
        )
    await db.execute(
        "INSERT INTO client_users (id, email, name, password_hash, created_at, updated_at)"
        " VALUES ('u', 'u@x', 'U', '!', 1, 1)"
    )
    await db.execute(
        "INSERT INTO workspaces (id, name, owner_id, created_at, updated_at) VALUES ('w', 'W', 'u', 1, 1)"
    )
    await db.execute("DELETE FROM client_users WHERE id = 'u'")
    assert await db.fetchone("SELECT id FROM workspaces WHERE id = 'w'") is None


async def test_platform_settings_seeded(db: Database) -> None:
    rows = {r[0]: r[1] for r in await db.fetchall("SELECT key, value FROM platform_settings")}
    assert rows["default_subscription_tier"] == '"starter"'
    assert rows["trial_duration_days"] == "14"
    assert rows["pricing_markup_percentage"] == "20"
    assert set(rows) >= {"available_integrations", "feature_flags"}


async def test_migrate_twice_is_a_no_op(raw_db: Database) -> None:
    assert await migrate(raw_db) == [m.version for m in load_migrations()]
    before = await raw_db.fetchall("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert await migrate(raw_db) == []
    after = await raw_db.fetchall("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert (await raw_db.fetchone("SELECT COUNT(*) FROM subscription_tiers"))[0] == 3  # type: ignore[index]


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
async def test_postgres_schema_mirrors_seed(db: Database) -> None:
    assert db.dialect == "postgresql"
    seed = _seed_connection()
    pg_type = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision"}
    for table in _tables(seed):
        cols = await db.fetchall(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        seed_cols = seed.execute(f"PRAGMA table_info({table})").fetchall()
        assert [c[0] for c in cols] == [c[1] for c in seed_cols], table
        for pg, (_, name, decl, notnull, default, pk) in zip(cols, seed_cols, strict=True):
            assert pg[1] == pg_type[decl], (table, name)
            assert (pg[2] == "NO") == bool(notnull or pk), (table, name)
            assert (pg[3] is None) == (default is None), (table, name)
        seed_fks = {(r[2], r[3], r[4], r[6]) for r in seed.execute(f"PRAGMA foreign_key_list({table})")}
        pg_fks = await db.fetchall(
            "SELECT ccu.table_name, kcu.column_name, ccu.column_name, rc.delete_rule"
            " FROM information_schema.referential_constraints rc"
            " JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = rc.constraint_name"
            "  AND kcu.constraint_schema = rc.constraint_schema"
            " JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = rc.constraint_name"
            "  AND ccu.constraint_schema = rc.constraint_schema"
            " WHERE rc.constraint_schema = current_schema() AND kcu.table_name = ?",
            (table,),
        )
        assert {tuple(r) for r in pg_fks} == seed_fks, table
        seed_idx = {r[1] for r in seed.execute(f"PRAGMA index_list({table})") if r[3] == "c"}
        pg_idx = {
            r[0]
            for r in await db.fetchall(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ?",
                (table,),
            )
        }
        assert seed_idx <= pg_idx, table
        n_checks = len(
            _checks(seed.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0])
        )
        pg_checks = await db.fetchone(
            "SELECT COUNT(*) FROM information_schema.table_constraints WHERE table_schema = current_schema()"
            " AND table_name = ? AND constraint_type = 'CHECK' AND constraint_name NOT LIKE '%not_null'",
            (table,),
        )
        assert pg_checks is not None and pg_checks[0] == n_checks, table


def test_postgres_translation_is_mechanical() -> None:
    sql = "CREATE TABLE t (a INTEGER NOT NULL, b REAL DEFAULT 0.0, c TEXT DEFAULT 'REAL') -- REAL\n;"
    assert to_postgres_ddl(sql) == (
        "CREATE TABLE t (a BIGINT NOT NULL, b DOUBLE PRECISION DEFAULT 0.0, c TEXT DEFAULT 'REAL') \n;"
    )


def test_split_statements_keeps_semicolons_in_strings() -> None:
    parts = split_statements("-- hi\nINSERT INTO t VALUES ('a;b');\nCREATE INDEX i ON t(x);\n-- bye\n")
    assert len(parts) == 2
    assert parts[0].endswith("INSERT INTO t VALUES ('a;b');") and parts[1] == "CREATE INDEX i ON t(x);"
