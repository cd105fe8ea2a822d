"""Where the prices of a call come from: provider configs, the platform markup, the tier.

Provider unit costs, most specific first (the first layer that prices a resource wins):

1. the workspace's ``workspace_provider_configs.config`` key ``cost_per_unit``;
2. the platform's ``platform_provider_configs.config`` key ``cost_per_unit``;
3. the platform's ``platform_provider_configs.cost_per_unit`` column (call minutes only);
4. otherwise 0.

A ``cost_per_unit`` in a config JSON is either a number (the price of one call minute) or an
object by resource type, e.g. ``{"call_minutes": 0.07, "ai_tokens": 0.000004,
"transcription": 0.00003}`` (per minute, per token, per character). When the workspace brings its
own key for the provider (``uses_platform_key = 0``) the provider bills the workspace directly,
so layers 2 and 3 are skipped: only the workspace's own override can price provider usage then.
A price that is not a number >= 0 is ignored with a warning and the next layer applies.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from storage.billing_pricing import (
    CALL_MINUTES,
    PROVIDER_RESOURCES,
    Rates,
    TierPricing,
    price_decimal,
    stored_decimal,
)
from storage.db import Executor
from storage.models import parse_json
from storage.settings import setting_value

log = logging.getLogger(__name__)

MARKUP_SETTING = "pricing_markup_percentage"
DEFAULT_MARKUP_PERCENTAGE = Decimal(20)

_PROVIDER_COSTS = """
SELECT (SELECT cost_per_unit FROM platform_provider_configs WHERE provider = ?) AS platform_cost,
       (SELECT config FROM platform_provider_configs WHERE provider = ?) AS platform_config,
       (SELECT uses_platform_key FROM workspace_provider_configs WHERE workspace_id = ? AND provider = ?)
           AS uses_platform_key,
       (SELECT config FROM workspace_provider_configs WHERE workspace_id = ? AND provider = ?)
           AS workspace_config
"""

_TIER = (
    "SELECT tier_name, monthly_fee, included_minutes, price_per_minute FROM subscription_tiers"
    " WHERE tier_name = ?"
)


def _layer_costs(config_json: str | None, where: str) -> dict[str, Decimal]:
    """The per-resource prices a config JSON's ``cost_per_unit`` sets (see module docstring)."""
    try:
        config = parse_json(config_json, {})
    except ValueError:
        log.warning("%s: config is not JSON; its cost_per_unit is ignored", where)
        return {}
    spec: Any = config.get("cost_per_unit") if isinstance(config, dict) else None
    if spec is None:
        return {}
    raw = spec if isinstance(spec, dict) else {CALL_MINUTES: spec}
    costs = {}
    for resource, value in raw.items():
        price = price_decimal(value)
        if resource not in PROVIDER_RESOURCES or price is None:
            log.warning("%s: ignoring cost_per_unit entry %r=%r", where, resource, value)
            continue
        costs[resource] = price
    return costs


def resolve_unit_costs(
    *,
    provider: str,
    platform_cost_per_unit: float | None,
    platform_config: str | None,
    workspace_config: str | None,
    uses_platform_key: bool,
) -> dict[str, Decimal]:
    """Provider price per unit for each resource type it prices (others cost 0)."""
    costs: dict[str, Decimal] = {}
    if uses_platform_key:
        column = price_decimal(platform_cost_per_unit)
        if column is not None:
            costs[CALL_MINUTES] = column
        costs.update(_layer_costs(platform_config, f"platform provider {provider!r}"))
    costs.update(_layer_costs(workspace_config, f"workspace provider {provider!r}"))
    return costs


async def markup_percentage(db: Executor) -> Decimal:
    """Platform markup in percent, exactly as configured (default 20)."""
    value = await setting_value(db, MARKUP_SETTING, None)
    markup = price_decimal(value)
    if markup is None:
        if value is not None:
            log.warning(
                "platform setting %s=%r is not a number >= 0: using %s",
                MARKUP_SETTING,
                value,
                DEFAULT_MARKUP_PERCENTAGE,
            )
        return DEFAULT_MARKUP_PERCENTAGE
    return markup


async def tier_pricing(db: Executor, tier_name: str | None) -> TierPricing | None:
    """The tier's fee, allowance and overage price; None (with a warning) when it does not exist."""
    row = await db.fetchone(_TIER, (tier_name,)) if tier_name else None
    if row is None:
        log.warning("subscription tier %r not found: no included minutes, overage or fee", tier_name)
        return None
    return TierPricing(
        tier_name=row["tier_name"],
        monthly_fee=stored_decimal(row["monthly_fee"]),
        included_minutes=Decimal(int(row["included_minutes"] or 0)),
        price_per_minute=price_decimal(row["price_per_minute"]) or Decimal(0),
    )


async def load_rates(db: Executor, workspace_id: str, provider: str, tier_name: str | None) -> Rates:
    params = (provider, provider, workspace_id, provider, workspace_id, provider)
    row = await db.fetchone(_PROVIDER_COSTS, params)
    if row is None:  # cannot happen: a SELECT without FROM returns exactly one row
        raise RuntimeError("provider cost query returned no row")
    uses_platform_key = row["uses_platform_key"] is None or int(row["uses_platform_key"]) != 0
    unit_costs = resolve_unit_costs(
        provider=provider,
        platform_cost_per_unit=row["platform_cost"],
        platform_config=row["platform_config"],
        workspace_config=row["workspace_config"],
        uses_platform_key=uses_platform_key,
    )
    return Rates(
        unit_costs=unit_costs,
        markup_percentage=await markup_percentage(db),
        tier=await tier_pricing(db, tier_name),
    )
