"""Reads of subscription tiers, workspace billing settings and platform settings.

(Usage records and billing periods live in ``storage/billing*.py``.)
"""

from __future__ import annotations

from typing import Any

from storage.db import Executor
from storage.models import BillingSettings, PlatformSetting, SubscriptionTier, columns, from_row, parse_json


async def get_tier(db: Executor, tier_name: str) -> SubscriptionTier | None:
    row = await db.fetchone(
        f"SELECT {columns(SubscriptionTier)} FROM subscription_tiers WHERE tier_name = ?", (tier_name,)
    )
    return None if row is None else from_row(SubscriptionTier, row)


async def list_tiers(db: Executor) -> list[SubscriptionTier]:
    rows = await db.fetchall(
        f"SELECT {columns(SubscriptionTier)} FROM subscription_tiers ORDER BY monthly_fee"
    )
    return [from_row(SubscriptionTier, row) for row in rows]


async def get_billing_settings(db: Executor, workspace_id: str) -> BillingSettings | None:
    row = await db.fetchone(
        f"SELECT {columns(BillingSettings)} FROM workspace_billing_settings WHERE workspace_id = ?",
        (workspace_id,),
    )
    return None if row is None else from_row(BillingSettings, row)


async def get_platform_setting(db: Executor, key: str) -> PlatformSetting | None:
    row = await db.fetchone(f"SELECT {columns(PlatformSetting)} FROM platform_settings WHERE key = ?", (key,))
    return None if row is None else from_row(PlatformSetting, row)


async def list_platform_settings(db: Executor) -> list[PlatformSetting]:
    rows = await db.fetchall(f"SELECT {columns(PlatformSetting)} FROM platform_settings ORDER BY key")
    return [from_row(PlatformSetting, row) for row in rows]


async def setting_value(db: Executor, key: str, default: Any = None) -> Any:
    """A platform setting's decoded JSON value, or ``default`` when absent."""
    row = await db.fetchone("SELECT value FROM platform_settings WHERE key = ?", (key,))
    return default if row is None else parse_json(row[0], default)


async def markup_percentage(db: Executor) -> float:
    """The platform markup on provider costs (setting ``pricing_markup_percentage``, default 20)."""
    return float(await setting_value(db, "pricing_markup_percentage", 20))
