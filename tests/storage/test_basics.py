"""Ids, secrets, the database layer itself, and the CLI."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import stat
import sys
import threading
import uuid
from pathlib import Path

import pytest

import storage.db
from storage.cli import register
from storage.db import Database, open_database, sqlite_path, to_postgres_placeholders
from storage.ids import new_id, now_s
from storage.secrets import ENV_KEY, SecretBox, SecretError, generate_key, load_secret_box
from tests.storage.conftest import TEST_KEY


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) / 1000 - now_s()) < 5


def test_secret_box_round_trip_and_tamper() -> None:
    box = SecretBox(TEST_KEY)
    token = box.encrypt("sk-live-123")
    assert token.startswith("v1:") and "sk-live-123" not in token and token != box.encrypt("sk-live-123")
    assert box.decrypt(token) == "sk-live-123"
    assert "key" in repr(box) and str(TEST_KEY) not in repr(box)
    raw = bytearray(base64.urlsafe_b64decode(token[3:]))
    raw[-1] ^= 1
    with pytest.raises(SecretError, match="wrong key or tampered"):
        box.decrypt("v1:" + base64.urlsafe_b64encode(bytes(raw)).decode())
    with pytest.raises(SecretError, match="wrong key or tampered"):
        SecretBox(bytes(32)).decrypt(token)
    for junk in ("plain", "v2:abc", "v1:!!!", "v1:AAAA"):
        with pytest.raises(SecretError):
            box.decrypt(junk)


def test_load_secret_box_from_env_and_dev_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = generate_key()
    token = load_secret_box({ENV_KEY: key}).encrypt("x")
    assert SecretBox(base64.b64decode(key)).decrypt(token) == "x"
    with pytest.raises(SecretError, match="32 bytes"):
        load_secret_box({ENV_KEY: base64.b64encode(b"short").decode()})
    with pytest.raises(SecretError, match="not set"):
        load_secret_box({})
    path = tmp_path / "dev" / "secret.key"
    with caplog.at_level(logging.WARNING, logger="storage.secrets"):
        first = load_secret_box({}, dev_key_path=path)
    assert "generated a development key" in caplog.text and path.read_text().strip() not in caplog.text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret_box({}, dev_key_path=path).decrypt(first.encrypt("y")) == "y"


def test_url_forms_and_placeholders() -> None:
    assert sqlite_path("var/x.db") == "var/x.db"
    assert sqlite_path("sqlite:///var/x.db") == "var/x.db"
    assert sqlite_path("sqlite:////tmp/x.db") == "/tmp/x.db"
    with pytest.raises(ValueError):
        sqlite_path("sqlite://host/x.db")
    assert to_postgres_placeholders("a = ? AND b = '?' AND c = ?") == "a = $1 AND b = '?' AND c = $2"


async def test_transactions_commit_or_roll_back(db: Database) -> None:
    sql = "INSERT INTO platform_settings (key, value, updated_at) VALUES (?, ?, ?)"
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute(sql, ("a", "1", 1))
            raise RuntimeError("boom")
    assert await db.fetchone("SELECT key FROM platform_settings WHERE key = 'a'") is None
    async with db.transaction() as tx:
        await tx.executemany(sql, [("b", "1", 1), ("c", "2", 2)])
        row = await tx.fetchone("SELECT COUNT(*) FROM platform_settings WHERE key IN ('b', 'c')")
        assert row is not None and row[0] == 2
    rows = await db.fetchall("SELECT key, value FROM platform_settings WHERE key IN ('b', 'c') ORDER BY key")
    assert [(r["key"], r["value"]) for r in rows] == [("b", "1"), ("c", "2")]


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path}/p.db")
    assert db.dialect == "sqlite"
    for pragma, expected in (("journal_mode", "wal"), ("foreign_keys", 1), ("synchronous", 1)):
        row = await db.fetchone(f"PRAGMA {pragma}")
        assert row is not None and row[0] == expected, pragma
    await db.close()


async def test_sqlite_wal_is_checkpointed_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed pages reach the database file without a writer commit crossing the threshold."""
    monkeypatch.setattr(storage.db, "CHECKPOINT_INTERVAL_S", 0.02)
    path = tmp_path / "c.db"
    db = await open_database(str(path))
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE t (x TEXT)")
        await tx.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(2000)])
    # ~1 MB is far below wal_autocheckpoint: only the background checkpointer moves it.
    for _ in range(100):
        if path.stat().st_size > 1_000_000:
            break
        await asyncio.sleep(0.02)
    assert path.stat().st_size > 1_000_000
    await db.close()  # stops the checkpointer and closes its connection


def _thread_names(tids: set[int] | None = None) -> set[str]:
    """This process's thread names (all, or those of ``tids``), from /proc."""
    tasks = Path("/proc/self/task")
    paths = tasks.glob("*/comm") if tids is None else (tasks / str(t) / "comm" for t in tids)
    return {p.read_text().strip() for p in paths}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
async def test_sqlite_threads_run_below_the_event_loop(tmp_path: Path) -> None:
    """The connection's worker thread is niced down; the thread that opened it (the loop's) is not."""
    loop_tid = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, loop_tid)
    conn = await storage.db._sqlite_connect(str(tmp_path / "n.db"), busy_timeout_ms=1000)
    try:
        await conn.create_function("worker_tid", 0, threading.get_native_id)
        async with conn.execute("SELECT worker_tid()") as cursor:
            row = await cursor.fetchone()
        assert row is not None and row[0] != loop_tid
        expected = min(19, before + storage.db.STORAGE_THREAD_NICE)
        assert os.getpriority(os.PRIO_PROCESS, row[0]) == expected
        assert os.getpriority(os.PRIO_PROCESS, loop_tid) == before
        assert _thread_names({row[0]}) == {"vgw-db-writer"}  # named for top -H and schedstat
    finally:
        await conn.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc")
async def test_each_sqlite_connection_thread_is_named_for_its_role(tmp_path: Path) -> None:
    db = await storage.db.open_sqlite(str(tmp_path / "roles.db"))
    try:
        names = _thread_names()
    finally:
        await db.close()
    assert {"vgw-db-writer", "vgw-db-reader", "vgw-db-checkpt"} <= names


def main(argv: list[str]) -> int:
    """The storage part of ``voicegw`` alone (other packages' commands are not needed here)."""
    parser = argparse.ArgumentParser(prog="voicegw")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_migrate_provision_recover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_KEY, base64.b64encode(TEST_KEY).decode())
    url = str(tmp_path / "cli.db")
    assert main(["db", "migrate", "--db", url]) == 0
    assert "applied migrations: 0001" in capsys.readouterr().out
    assert main(["db", "migrate", "--db", url]) == 0
    assert "up to date" in capsys.readouterr().out
    demo = Path(__file__).resolve().parents[2] / "storage" / "demo" / "demo.json"
    assert main(["provision", str(demo), "--db", url]) == 0
    assert main(["provision", str(demo), "--db", url]) == 0
    assert " 0 created, 0 updated" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"workspaces": [{"name": "x", "owner": "nobody@x.test"}]}')
    assert main(["provision", str(bad), "--db", url]) == 2
    assert "workspaces[0].owner: no client user" in capsys.readouterr().err
    assert main(["db", "recover", "--db", url]) == 0
    assert "0 call(s) recovered" in capsys.readouterr().out


def test_forked_processes_mint_different_ids() -> None:
    """Entropy is buffered per process; a forked worker must not replay its parent's buffer."""
    import os

    from storage.ids import new_id

    new_id()  # fill the buffer before forking
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(write_end, new_id().encode())
        os._exit(0)
    child_id = os.read(read_end, 64).decode()
    os.waitpid(pid, 0)
    assert child_id[19:] != new_id()[19:]  # the random tails differ
