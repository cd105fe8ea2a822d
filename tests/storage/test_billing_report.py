"""billing_report and the ``voicegw billing`` commands."""

from __future__ import annotations

import argparse
from decimal import Decimal as D

import pytest

from storage import billing_cli
from storage.billing import billing_report, close_periods
from storage.db import Database
from tests.storage.billing_fixtures import Tenant, at, bill, make_workspace, set_platform_provider
from tests.storage.conftest import Backend

NY = "America/New_York"


@pytest.fixture
async def tenants(db: Database) -> tuple[Tenant, Tenant]:
    """Alpha (UTC, starter, limit 50) crosses its included minutes in January; Beta (New York,
    enterprise, no limit) has one 10-minute call on its local January 31st; both roll over."""
    await set_platform_provider(db, "acme", 0.10)
    alpha = await make_workspace(db, name="Alpha", tier="starter", limit=50)
    beta = await make_workspace(db, name="Beta", tier="enterprise", timezone=NY)
    await bill(db, alpha, seconds=5970, ended_at=at("UTC", 2024, 1, 10))
    await bill(db, alpha, seconds=125, ended_at=at("UTC", 2024, 1, 11))
    await bill(db, beta, seconds=600, ended_at=at(NY, 2024, 1, 31, 23, 30))
    await close_periods(db, at("UTC", 2024, 2, 2))
    await bill(db, alpha, seconds=60, ended_at=at("UTC", 2024, 2, 5))
    return alpha, beta


async def test_report_for_a_month(db: Database, tenants: tuple[Tenant, Tenant]) -> None:
    alpha, beta = tenants
    a, b = await billing_report(db, period="2024-01")
    assert (a.workspace_id, a.workspace_name, a.period, a.status) == (
        alpha.workspace_id,
        "Alpha",
        "2024-01",
        "finalized",
    )
    assert (a.minutes, a.included_minutes, a.overage_minutes) == (D("101.5833"), D("100"), D("1.5833"))
    assert (a.cost, a.markup, a.subtotal) == (D("10.237495"), D("2.031666"), D("12.269161"))
    assert (a.subscription_fee, a.total, a.limit, a.limit_used_pct) == (
        D("29.99"),
        D("42.259161"),
        D("50"),
        D("24.5"),
    )
    assert (b.workspace_id, b.period, b.minutes, b.overage_minutes) == (
        beta.workspace_id,
        "2024-01",
        D("10"),
        D("0"),
    )
    assert (b.cost, b.markup, b.subtotal, b.total, b.limit, b.limit_used_pct) == (
        D("1"),
        D("0.2"),
        D("1.2"),
        D("301.19"),
        None,
        None,
    )
    [only] = await billing_report(db, beta.workspace_id, "2024-01")
    assert only.period_id == b.period_id


async def test_report_defaults_to_current_periods(db: Database, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = await billing_report(db)
    assert [(r.workspace_name, r.period, r.status) for r in (a, b)] == [
        ("Alpha", "2024-02", "current"),
        ("Beta", "2024-02", "current"),
    ]
    assert (a.minutes, a.overage_minutes, a.subtotal, a.limit_used_pct) == (
        D("1"),
        D("0"),
        D("0.12"),
        D("0.2"),
    )
    assert (b.minutes, b.subtotal, b.total) == (D("0"), D("0"), D("299.99"))
    assert await billing_report(db, period="2023-12") == []


async def test_report_refuses_a_bad_period(db: Database) -> None:
    for bad in ("2024-1", "24-01", "2024-13", "January"):
        with pytest.raises(ValueError, match="YYYY-MM"):
            await billing_report(db, period=bad)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="voicegw")
    billing_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_cli_report_and_close_periods(
    backend: Backend, tenants: tuple[Tenant, Tenant], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("billing", "report", "--db", backend.url, "--period", "2024-01") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
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
    ]
    alpha = out[1].split()
    assert alpha[0] == "Alpha" and alpha[2:] == [
        "2024-01",
        "finalized",
        "101.5833",
        "100",
        "1.5833",
        "10.237495",
        "2.031666",
        "12.269161",
        "29.99",
        "42.259161",
        "50.00",
        "24.5%",
    ]
    assert out[2].split()[-2:] == ["-", "-"]

    assert _cli("billing", "close-periods", "--db", backend.url, "--now", str(at("UTC", 2024, 3, 2))) == 0
    assert "2 billing period(s) finalized" in capsys.readouterr().out
    assert _cli("billing", "bill-recovered", "--db", backend.url) == 0
    assert "0 recovered call(s) billed" in capsys.readouterr().out
    assert _cli("billing", "report", "--db", backend.url, "--period", "1999-99") == 2
    assert "period must be YYYY-MM" in capsys.readouterr().err
