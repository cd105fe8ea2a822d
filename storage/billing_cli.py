"""``voicegw billing close-periods|bill-recovered|report``.

``close-periods`` is the monthly cron job (safe to run hourly: idempotent); ``bill-recovered``
bills calls ``voicegw db recover`` closed and calls whose billing failed when they ended;
``report`` prints one line per workspace and period.
The database URL comes from ``--db``, else ``VOICEGW_DB``, else ``var/voicegw.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from decimal import Decimal

from storage.billing import bill_failed_calls, bill_recovered_calls, billing_report, close_periods
from storage.billing_report import ReportRow
from storage.cli import default_db_url
from storage.db import open_database
from storage.ids import now_s
from storage.migrate import migrate

_COLUMNS = (
    "WORKSPACE",
    "PERIOD",
    "STATUS",
    "MINUTES",
    "INCLUDED",
    "OVERAGE",
    "COST",
    "MARKUP",
    "SUBTOTAL",
    "FEE",
    "TOTAL",
    "LIMIT",
    "USED%",
)


def _money(value: Decimal) -> str:
    return f"{value:.2f}" if value == value.quantize(Decimal("0.01")) else f"{value.normalize():f}"


def format_report(rows: Sequence[ReportRow]) -> str:
    """A plain aligned table (money to the cent unless sub-cent digits matter)."""
    lines = [_COLUMNS]
    for r in rows:
        lines.append(
            (
                f"{r.workspace_name} ({r.workspace_id})",
                r.period,
                r.status,
                f"{r.minutes:.4f}",
                f"{r.included_minutes:.0f}",
                f"{r.overage_minutes:.4f}",
                _money(r.cost),
                _money(r.markup),
                _money(r.subtotal),
                _money(r.subscription_fee),
                _money(r.total),
                "-" if r.limit is None else _money(r.limit),
                "-" if r.limit_used_pct is None else f"{r.limit_used_pct}%",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
    text_columns = 3  # left-aligned; the figures after them are right-aligned
    out = []
    for line in lines:
        cells = [
            cell.ljust(w) if i < text_columns else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


async def _close_periods(url: str, at_s: int) -> int:
    db = await open_database(url)
    try:
        await migrate(db)
        finalized = await close_periods(db, at_s)
    finally:
        await db.close()
    print(f"{len(finalized)} billing period(s) finalized")
    return 0


async def _bill_recovered(url: str, at_s: int) -> int:
    db = await open_database(url)
    try:
        await migrate(db)
        billed = await bill_recovered_calls(db, at_s)
        rebilled = await bill_failed_calls(db, at_s)
    finally:
        await db.close()
    print(f"{billed} recovered call(s) billed")
    print(f"{rebilled} call(s) whose billing had failed billed")
    return 0


async def _report(url: str, workspace_id: str | None, period: str | None) -> int:
    db = await open_database(url)
    try:
        await migrate(db)
        rows = await billing_report(db, workspace_id, period)
    finally:
        await db.close()
    print(format_report(rows) if rows else "no billing periods match")
    return 0


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    at_s = now_s() if getattr(args, "now", None) is None else int(args.now)
    try:
        if args.billing_command == "close-periods":
            return asyncio.run(_close_periods(args.db, at_s))
        if args.billing_command == "bill-recovered":
            return asyncio.run(_bill_recovered(args.db, at_s))
        return asyncio.run(_report(args.db, args.workspace, args.period))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    """Adds ``billing close-periods``, ``billing bill-recovered`` and ``billing report``."""
    db_help = "database URL: path, sqlite:///path or postgresql://... (default $VOICEGW_DB or var/voicegw.db)"
    billing = sub.add_parser("billing", help="usage billing: close periods, bill recovered calls, report")
    billing_sub = billing.add_subparsers(dest="billing_command", required=True)
    for name, text in (
        ("close-periods", "finalize ended billing periods and open the next ones"),
        ("bill-recovered", "bill calls closed by crash recovery or whose billing failed"),
        ("report", "per-workspace usage, cost, markup, total and limit use"),
    ):
        p = billing_sub.add_parser(name, help=text)
        p.add_argument("--db", default=default_db_url(), help=db_help)
        if name == "report":
            p.add_argument("--workspace", default=None, help="only this workspace id")
            p.add_argument(
                "--period",
                default=None,
                help="YYYY-MM in each workspace's timezone (default: the current periods)",
            )
        else:
            p.add_argument("--now", type=int, default=None, help="act as if now were these epoch seconds")
        p.set_defaults(func=_run)
