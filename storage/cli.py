"""``voicegw db migrate|recover`` and ``voicegw provision FILE``.

The database URL comes from ``--db``, else ``VOICEGW_DB``, else ``var/voicegw.db`` (SQLite).
Provisioning encrypts API keys with ``VOICEGW_SECRET_KEY``; without it a development key is
generated into ``var/secret.key`` (with a warning), the same file ``voicegw serve`` uses.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from storage.db import open_database
from storage.ids import now_s
from storage.migrate import migrate
from storage.provision import ProvisionError, provision_file
from storage.recovery import recover
from storage.secrets import DEFAULT_DEV_KEY_PATH, SecretError, load_secret_box

DEFAULT_DB_URL = "var/voicegw.db"


def default_db_url() -> str:
    return os.environ.get("VOICEGW_DB") or DEFAULT_DB_URL


async def _migrate(url: str) -> int:
    db = await open_database(url)
    try:
        applied = await migrate(db)
    finally:
        await db.close()
    print(f"applied migrations: {', '.join(f'{v:04d}' for v in applied)}" if applied else "schema up to date")
    return 0


async def _recover(url: str) -> int:
    db = await open_database(url)
    try:
        await migrate(db)
        recovered = await recover(db, now_s())
    finally:
        await db.close()
    for call in recovered:
        print(f"recovered call {call.id} (workspace {call.workspace_id}, {call.duration_seconds}s)")
    print(f"{len(recovered)} call(s) recovered")
    return 0


async def _provision(url: str, path: str) -> int:
    box = load_secret_box(dev_key_path=DEFAULT_DEV_KEY_PATH)
    db = await open_database(url)
    try:
        await migrate(db)
        result = await provision_file(db, path, box, now=now_s())
    finally:
        await db.close()
    print(
        f"provisioned {path}: {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "provision":
            return asyncio.run(_provision(args.db, args.file))
        if args.db_command == "migrate":
            return asyncio.run(_migrate(args.db))
        return asyncio.run(_recover(args.db))
    except (ProvisionError, SecretError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    """Adds ``db migrate``, ``db recover`` and ``provision``."""
    db_help = "database URL: path, sqlite:///path or postgresql://... (default $VOICEGW_DB or var/voicegw.db)"
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("migrate", "apply pending schema migrations"),
        ("recover", "close calls left open by a crash"),
    ):
        p = db_sub.add_parser(name, help=text)
        p.add_argument("--db", default=default_db_url(), help=db_help)
        p.set_defaults(func=_run)
    p = sub.add_parser("provision", help="create or update tenants and providers from a JSON/TOML file")
    p.add_argument("file")
    p.add_argument("--db", default=default_db_url(), help=db_help)
    p.set_defaults(func=_run)
