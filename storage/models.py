"""Typed rows of the platform tables: frozen, slotted dataclasses, fields in column order.

Column values are kept exactly as stored, so a row read back equals the row written:
- timestamps are ``int`` epoch seconds;
- flags (``is_active``, ``is_enabled``, ...) are the stored ``0``/``1`` ints;
- JSON columns (``config``, ``voice_config``, ``event_data``, ``features``, ``value``, ...) stay
  the stored ``str``; ``parse_json`` (or a row's ``*_dict()`` helper) decodes them on demand,
  so reads that do not need them never pay for parsing.

``columns(Model, alias)`` gives the SELECT list and ``from_row(Model, row)`` builds the object
positionally, which works the same for ``sqlite3.Row`` and ``asyncpg.Record``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import cache
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def parse_json(text: str | None, default: Any = None) -> Any:
    """Decodes a JSON column; NULL or empty text gives ``default``."""
    if not text:
        return default
    return orjson.loads(text)


def dump_json(value: Any) -> str:
    """Encodes a value for a JSON column (compact, keys in insertion order)."""
    return orjson.dumps(value).decode()


@cache
def field_names(model: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(model))


def columns(model: type, alias: str | None = None) -> str:
    """``"a, b, c"`` (or ``"x.a, x.b, x.c"``) for a model's columns, in field order."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + name for name in field_names(model))


def from_row(model: type[T], row: Iterable[Any]) -> T:
    """Builds a model from a row whose first columns are ``columns(model)``."""
    names = field_names(model)  # type: ignore[arg-type]
    return model(*tuple(row)[: len(names)])


@dataclass(frozen=True, slots=True)
class ClientUser:
    id: str
    email: str
    name: str
    password_hash: str
    is_active: int | None
    email_verified: int | None
    created_at: int
    updated_at: int
    last_login: int | None


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    industry: str | None
    owner_id: str
    status: str | None
    subscription_tier: str | None
    trial_ends_at: int | None
    timezone: str | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class WorkspaceMember:
    workspace_id: str
    user_id: str
    role: str
    invited_by: str | None
    joined_at: int


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    id: str
    workspace_id: str
    phone_number: str
    provider: str
    provider_sid: str | None
    friendly_name: str | None
    status: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class VoiceAgent:
    id: str
    workspace_id: str
    phone_number_id: str | None
    name: str
    template_id: str | None
    config: str
    voice_provider: str
    voice_config: str
    status: str | None
    created_at: int
    updated_at: int
    activated_at: int | None

    def config_dict(self) -> dict[str, Any]:
        return parse_json(self.config, {})

    def voice_config_dict(self) -> dict[str, Any]:
        return parse_json(self.voice_config, {})


@dataclass(frozen=True, slots=True)
class PlatformProviderConfig:
    provider: str
    api_key_encrypted: str
    config: str | None
    priority: int | None
    is_enabled: int | None
    cost_per_unit: float | None
    created_at: int
    updated_at: int

    def config_dict(self) -> dict[str, Any]:
        return parse_json(self.config, {})


@dataclass(frozen=True, slots=True)
class WorkspaceProviderConfig:
    id: str
    workspace_id: str
    provider: str
    uses_platform_key: int | None
    api_key_encrypted: str | None
    config: str | None
    is_enabled: int | None
    created_at: int
    updated_at: int

    def config_dict(self) -> dict[str, Any]:
        return parse_json(self.config, {})


@dataclass(frozen=True, slots=True)
class ProviderStrategy:
    workspace_id: str
    strategy: str
    config: str | None
    fallback_enabled: int | None
    updated_at: int

    def config_dict(self) -> dict[str, Any]:
        return parse_json(self.config, {})


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    provider: str
    region: str
    status: str
    last_check: int
    error_rate: float | None
    avg_latency: int | None
    details: str | None


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    workspace_id: str
    agent_id: str
    phone_number_id: str
    caller_number: str
    caller_name: str | None
    direction: str
    status: str
    provider_call_sid: str | None
    voice_provider_used: str
    duration_seconds: int | None
    recording_url: str | None
    transcription: str | None
    summary: str | None
    sentiment: str | None
    metadata: str | None
    cost_total: float | None
    started_at: int
    ended_at: int | None


@dataclass(frozen=True, slots=True)
class CallEvent:
    id: str
    call_id: str
    event_type: str
    event_data: str | None
    timestamp: int

    def data(self) -> dict[str, Any] | None:
        return parse_json(self.event_data)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    id: str
    workspace_id: str
    call_id: str | None
    resource_type: str
    provider: str
    quantity: float
    unit_cost: float
    total_cost: float
    markup_percentage: float | None
    final_cost: float
    billing_period_id: str | None
    created_at: int


@dataclass(frozen=True, slots=True)
class BillingPeriod:
    id: str
    workspace_id: str
    period_start: int
    period_end: int
    subtotal: float | None
    subscription_fee: float | None
    total_amount: float | None
    status: str | None
    stripe_invoice_id: str | None
    paid_at: int | None
    created_at: int


@dataclass(frozen=True, slots=True)
class BillingSettings:
    workspace_id: str
    usage_limit_monthly: float | None
    alert_threshold_percentage: float | None
    auto_pause_on_limit: int | None
    payment_method_id: str | None
    billing_email: str | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class SubscriptionTier:
    tier_name: str
    display_name: str
    monthly_fee: float
    included_minutes: int | None
    price_per_minute: float
    max_agents: int | None
    max_phone_numbers: int | None
    features: str
    is_active: int | None
    created_at: int
    updated_at: int

    def feature_list(self) -> list[str]:
        return parse_json(self.features, [])


@dataclass(frozen=True, slots=True)
class PlatformSetting:
    key: str
    value: str
    description: str | None
    updated_by_admin_id: str | None
    updated_at: int

    def parsed(self) -> Any:
        return parse_json(self.value)
