"""What one call costs: the pure pricing rules of usage billing (no I/O; see docs/billing.md).

A call produces one charge per billable resource:

==================  =====================================  ==========================  =========
resource_type       quantity (unit)                        unit_cost                   markup
==================  =====================================  ==========================  =========
``call_minutes``    duration_seconds / 60, 4 decimals      provider's price per minute platform %
``ai_tokens``       input_tokens + output_tokens (tokens)  provider's price per token  platform %
``transcription``   characters reported (characters)       provider's price per char.  platform %
``overage_minutes`` call minutes past the tier's included  tier ``price_per_minute``   0
                    minutes this period, 4 decimals
==================  =====================================  ==========================  =========

``call_minutes`` is always written (quantity 0 for a zero-length call); ``ai_tokens`` and
``transcription`` only when the provider reported some. Provider charges pass the provider's
cost on with the platform markup. Included minutes are the tier's *platform* allowance: they are
consumed by every call minute in the period (in billing order) and, past them, each minute also
costs the tier's ``price_per_minute`` — a list price the customer sees on the pricing page, so
it carries no markup. A call that crosses the allowance is split exactly: only the minutes past
it are overage.

Money is ``Decimal``: ``total_cost = round6(quantity * unit_cost)`` and ``final_cost =
round6(total_cost * (1 + markup / 100))``, half-up. Sums are taken over the rounded
``final_cost``s, so a period's subtotal is exactly the sum of its rows' ``final_cost``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

MONEY_QUANTUM = Decimal("0.000001")
MINUTES_QUANTUM = Decimal("0.0001")
_HUNDRED = Decimal(100)
ZERO = Decimal(0)

CALL_MINUTES = "call_minutes"
AI_TOKENS = "ai_tokens"
TRANSCRIPTION = "transcription"
OVERAGE_MINUTES = "overage_minutes"
PROVIDER_RESOURCES = (CALL_MINUTES, AI_TOKENS, TRANSCRIPTION)
# ``usage_records.provider`` of the tier's own overage charge: it is not a provider's cost.
PLATFORM_PROVIDER = "platform"

# Provider-reported usage keys this module bills; others (audio_in_ms, audio_out_ms) are facts
# the call minutes already cover.
TOKEN_KEYS = ("input_tokens", "output_tokens")
CHARACTER_KEY = "characters"


def money(value: Decimal) -> Decimal:
    """Rounds to the stored money precision (6 decimals, half-up)."""
    return value.quantize(MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def billed_minutes(duration_seconds: int) -> Decimal:
    """Per-second billing: seconds / 60 to 4 decimals, half-up (61 s → 1.0167 min)."""
    if duration_seconds < 0:
        raise ValueError(f"duration_seconds must be >= 0, got {duration_seconds}")
    return (Decimal(duration_seconds) / 60).quantize(MINUTES_QUANTUM, rounding=ROUND_HALF_UP)


def stored_decimal(value: float | int | None, quantum: Decimal = MONEY_QUANTUM) -> Decimal:
    """A REAL column read back exactly: we only ever store values already rounded to ``quantum``,
    and a double keeps 15 significant digits, so its shortest repr is the decimal we stored."""
    if value is None:
        return ZERO
    return Decimal(repr(float(value))).quantize(quantum, rounding=ROUND_HALF_UP)


def price_decimal(value: float | int | str | None) -> Decimal | None:
    """A configured price (per unit) as given, without rounding; None when absent or invalid."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        price = Decimal(repr(value) if isinstance(value, float) else str(value))
    except ArithmeticError:
        return None
    return price if price.is_finite() and price >= 0 else None


@dataclass(frozen=True, slots=True)
class TierPricing:
    """The parts of a ``subscription_tiers`` row billing uses (NULL included_minutes → 0)."""

    tier_name: str
    monthly_fee: Decimal
    included_minutes: Decimal
    price_per_minute: Decimal


@dataclass(frozen=True, slots=True)
class Rates:
    """Everything that prices one call of one workspace on one provider."""

    unit_costs: Mapping[str, Decimal]  # resource_type → provider price per unit (missing: 0)
    markup_percentage: Decimal
    tier: TierPricing | None  # None: no tier row, so no allowance and no overage charge


@dataclass(frozen=True, slots=True)
class Charge:
    """One future ``usage_records`` row; costs are derived, so they cannot disagree."""

    resource_type: str
    provider: str
    quantity: Decimal
    unit_cost: Decimal
    markup_percentage: Decimal

    @property
    def total_cost(self) -> Decimal:
        return money(self.quantity * self.unit_cost)

    @property
    def final_cost(self) -> Decimal:
        return money(self.total_cost * (1 + self.markup_percentage / _HUNDRED))


def usage_count(usage: Mapping[str, float], key: str) -> int:
    """A provider-reported counter as a whole number; bad values are refused, not guessed."""
    value = usage.get(key, 0) or 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"usage[{key!r}] must be a finite number >= 0, got {value!r}")
    return round(value)


def overage_minutes(minutes_used_before: Decimal, minutes: Decimal, included: Decimal) -> Decimal:
    """The part of this call's minutes past the allowance, given what the period used before."""
    over_before = max(ZERO, minutes_used_before - included)
    over_after = max(ZERO, minutes_used_before + minutes - included)
    return over_after - over_before


def price_call(
    *,
    provider: str,
    duration_seconds: int,
    usage: Mapping[str, float],
    rates: Rates,
    minutes_used_before: Decimal,
) -> list[Charge]:
    """The charges of one call, in a stable order (call_minutes first)."""
    minutes = billed_minutes(duration_seconds)
    tokens = sum(usage_count(usage, key) for key in TOKEN_KEYS)
    characters = usage_count(usage, CHARACTER_KEY)

    def provider_charge(resource_type: str, quantity: Decimal) -> Charge:
        return Charge(
            resource_type,
            provider,
            quantity,
            rates.unit_costs.get(resource_type, ZERO),
            rates.markup_percentage,
        )

    charges = [provider_charge(CALL_MINUTES, minutes)]
    if tokens:
        charges.append(provider_charge(AI_TOKENS, Decimal(tokens)))
    if characters:
        charges.append(provider_charge(TRANSCRIPTION, Decimal(characters)))
    if rates.tier is not None:
        overage = overage_minutes(minutes_used_before, minutes, rates.tier.included_minutes)
        if overage > 0:
            price = rates.tier.price_per_minute
            charges.append(Charge(OVERAGE_MINUTES, PLATFORM_PROVIDER, overage, price, ZERO))
    return charges
