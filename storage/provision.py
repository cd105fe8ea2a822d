"""Provisioning tenants and providers from a JSON or TOML file, idempotently.

File shape (every list optional; unknown fields are refused)::

    client_users: [{email, name, password_hash?, is_active?, email_verified?}]
    platform_providers: [{provider, api_key, config?, priority?, is_enabled?, cost_per_unit?}]
    workspaces: [{id?, name, owner (email), industry?, status?, subscription_tier?, timezone?,
                  trial_days? | trial_ends_at?,
                  members: [{email, role, invited_by? (email)}],
                  phone_numbers: [{number, provider, provider_sid?, friendly_name?, status?}],
                  agents: [{id?, name, phone_number?, voice_provider, voice_config?, config?,
                            status?, template_id?}],
                  provider_configs: [{provider, api_key?, config?, is_enabled?}],
                  strategy: {strategy, config?, fallback_enabled?},
                  billing: {usage_limit_monthly?, alert_threshold_percentage?,
                            auto_pause_on_limit?, payment_method_id?, billing_email?}}]

Rows are found by natural keys (user email, workspace id or owner+name, phone number, agent id
or workspace+name, provider name), compared, and written only when something differs; created_at
is kept. Running a file twice changes nothing. Plaintext API keys are stored encrypted; an
existing token is kept when it still decrypts to the same key. ``trial_days`` sets
``trial_ends_at`` relative to the first provisioning only. The workspace owner is always a member
with role ``owner``. Rows absent from the file are left alone (provisioning only adds/updates).

Everything is validated before writing; what needs the database (references, tier limits
``max_agents``/``max_phone_numbers``) is checked inside the one transaction, so a bad file
leaves the database untouched. Errors name the field path, e.g.
``workspaces[0].agents[1].status: must be one of draft,testing,live,paused``.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from storage.db import Database, Executor
from storage.ids import new_id, now_s
from storage.migrate import migrate
from storage.models import dump_json, parse_json
from storage.provider_configs import STRATEGIES
from storage.secrets import SecretBox, SecretError
from storage.tenancy import (
    AGENT_STATUSES,
    MEMBER_ROLES,
    NUMBER_STATUSES,
    SUBSCRIPTION_TIERS,
    WORKSPACE_STATUSES,
)

log = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
NO_PASSWORD = "!"  # an unusable password hash: provisioned users cannot log in until one is set
DAY_S = 86_400


class ProvisionError(ValueError):
    """A provisioning file is invalid; ``path`` names the offending field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass
class ProvisionResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated)


# ------------------------------------------------------------------ validation


class _Fields:
    """Typed access to one object of the file, remembering which keys were read."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ProvisionError(path, "must be an object")
        self.data: dict[str, Any] = data
        self.path = path
        self._read: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self.data.get(key)

    def text(
        self,
        key: str,
        *,
        required: bool = False,
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
        default: str | None = None,
    ) -> str | None:
        value = self._get(key)
        if value is None:
            if required:
                raise ProvisionError(self.at(key), "is required")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            raise ProvisionError(self.at(key), "must be a non-empty string")
        if choices and value not in choices:
            raise ProvisionError(self.at(key), f"must be one of {','.join(choices)}")
        if pattern is not None and not pattern.match(value):
            raise ProvisionError(self.at(key), f"is not valid ({value!r})")
        return value

    def required_text(self, key: str, **kwargs: Any) -> str:
        value = self.text(key, required=True, **kwargs)
        assert value is not None
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProvisionError(self.at(key), "must be an integer")
        if minimum is not None and value < minimum:
            raise ProvisionError(self.at(key), f"must be >= {minimum}")
        return value

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProvisionError(self.at(key), "must be a number")
        return float(value)

    def flag(self, key: str, default: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or value in (0, 1):
            return int(value)
        raise ProvisionError(self.at(key), "must be true or false")

    def json_object(self, key: str, default: dict[str, Any] | None = None) -> dict[str, Any] | None:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, dict):
            raise ProvisionError(self.at(key), "must be an object")
        return value

    def objects(self, key: str) -> list[_Fields]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ProvisionError(self.at(key), "must be a list")
        return [_Fields(item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]

    def optional_object(self, key: str) -> _Fields | None:
        value = self._get(key)
        return None if value is None else _Fields(value, self.at(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            raise ProvisionError(self.at(unknown[0]), "unknown field")


def _unique(items: list[tuple[str, str]], what: str) -> None:
    seen: set[str] = set()
    for key, path in items:
        if key in seen:
            raise ProvisionError(path, f"duplicate {what} {key!r}")
        seen.add(key)


@dataclass(frozen=True)
class _User:
    email: str
    name: str
    password_hash: str
    is_active: int
    email_verified: int


@dataclass(frozen=True)
class _PlatformProvider:
    provider: str
    api_key: str
    config: dict[str, Any] | None
    priority: int
    is_enabled: int
    cost_per_unit: float | None


@dataclass(frozen=True)
class _Member:
    path: str
    email: str
    role: str
    invited_by: str | None


@dataclass(frozen=True)
class _Number:
    path: str
    number: str
    provider: str
    provider_sid: str | None
    friendly_name: str | None
    status: str


@dataclass(frozen=True)
class _Agent:
    path: str
    id: str | None
    name: str
    phone_number: str | None
    voice_provider: str
    voice_config: dict[str, Any]
    config: dict[str, Any]
    status: str
    template_id: str | None


@dataclass(frozen=True)
class _WorkspaceProvider:
    provider: str
    api_key: str | None
    config: dict[str, Any] | None
    is_enabled: int


@dataclass(frozen=True)
class _Strategy:
    strategy: str
    config: dict[str, Any] | None
    fallback_enabled: int


@dataclass(frozen=True)
class _Billing:
    usage_limit_monthly: float | None
    alert_threshold_percentage: float | None
    auto_pause_on_limit: int
    payment_method_id: str | None
    billing_email: str | None


@dataclass(frozen=True)
class _Workspace:
    path: str
    id: str | None
    name: str
    owner: str
    industry: str | None
    status: str
    tier: str
    timezone: str
    trial_days: int | None
    trial_ends_at: int | None
    members: list[_Member] = field(default_factory=list)
    numbers: list[_Number] = field(default_factory=list)
    agents: list[_Agent] = field(default_factory=list)
    providers: list[_WorkspaceProvider] = field(default_factory=list)
    strategy: _Strategy | None = None
    billing: _Billing | None = None


@dataclass(frozen=True)
class _Spec:
    users: list[_User]
    providers: list[_PlatformProvider]
    workspaces: list[_Workspace]


def validate_custom_strategy(config: dict[str, Any]) -> None:
    """Runs the router's rule validator, when the routing package provides one."""
    try:
        rules = importlib.import_module("routing.rules")
    except ModuleNotFoundError as exc:
        if exc.name in ("routing", "routing.rules"):
            return
        raise
    validator = getattr(rules, "validate_custom_config", None)
    if validator is not None:
        validator(config)


def parse_spec(data: Any) -> _Spec:
    """Validates a decoded file completely, before anything touches the database."""
    root = _Fields(data, "")
    users = []
    for u in root.objects("client_users"):
        users.append(
            _User(
                email=u.required_text("email", pattern=EMAIL).lower(),
                name=u.required_text("name"),
                password_hash=u.text("password_hash") or NO_PASSWORD,
                is_active=u.flag("is_active", 1),
                email_verified=u.flag("email_verified", 0),
            )
        )
        u.done()
    _unique([(u.email, f"client_users[{i}].email") for i, u in enumerate(users)], "email")
    providers = []
    for p in root.objects("platform_providers"):
        providers.append(
            _PlatformProvider(
                provider=p.required_text("provider"),
                api_key=p.required_text("api_key"),
                config=p.json_object("config"),
                priority=p.integer("priority", 0) or 0,
                is_enabled=p.flag("is_enabled", 1),
                cost_per_unit=p.number("cost_per_unit"),
            )
        )
        p.done()
    _unique([(p.provider, f"platform_providers[{i}].provider") for i, p in enumerate(providers)], "provider")
    workspaces = [_parse_workspace(w) for w in root.objects("workspaces")]
    _unique([(w.id or f"{w.owner}/{w.name}", w.path) for w in workspaces], "workspace")
    _unique([(n.number, f"{n.path}.number") for w in workspaces for n in w.numbers], "phone number")
    root.done()
    return _Spec(users, providers, workspaces)


def _parse_workspace(w: _Fields) -> _Workspace:
    trial_days = w.integer("trial_days", minimum=0)
    trial_ends_at = w.integer("trial_ends_at", minimum=0)
    if trial_days is not None and trial_ends_at is not None:
        raise ProvisionError(w.at("trial_days"), "give trial_days or trial_ends_at, not both")
    members = []
    for m in w.objects("members"):
        members.append(
            _Member(
                m.path,
                m.required_text("email", pattern=EMAIL).lower(),
                m.required_text("role", choices=MEMBER_ROLES),
                (m.text("invited_by", pattern=EMAIL) or "").lower() or None,
            )
        )
        m.done()
    _unique([(m.email, f"{m.path}.email") for m in members], "member")
    numbers = []
    for n in w.objects("phone_numbers"):
        numbers.append(
            _Number(
                n.path,
                n.required_text("number", pattern=E164),
                n.required_text("provider"),
                n.text("provider_sid"),
                n.text("friendly_name"),
                n.text("status", choices=NUMBER_STATUSES, default="active") or "active",
            )
        )
        n.done()
    agents = []
    for a in w.objects("agents"):
        agents.append(
            _Agent(
                path=a.path,
                id=a.text("id"),
                name=a.required_text("name"),
                phone_number=a.text("phone_number", pattern=E164),
                voice_provider=a.required_text("voice_provider"),
                voice_config=a.json_object("voice_config", {}) or {},
                config=a.json_object("config", {}) or {},
                status=a.text("status", choices=AGENT_STATUSES, default="draft") or "draft",
                template_id=a.text("template_id"),
            )
        )
        a.done()
    _unique([(a.id or a.name, f"{a.path}.name") for a in agents], "agent")
    providers = []
    for p in w.objects("provider_configs"):
        providers.append(
            _WorkspaceProvider(
                p.required_text("provider"),
                p.text("api_key"),
                p.json_object("config"),
                p.flag("is_enabled", 1),
            )
        )
        p.done()
    _unique(
        [(p.provider, f"{w.at('provider_configs')}[{i}].provider") for i, p in enumerate(providers)],
        "provider",
    )
    strategy = None
    s = w.optional_object("strategy")
    if s is not None:
        strategy = _Strategy(
            s.required_text("strategy", choices=STRATEGIES),
            s.json_object("config"),
            s.flag("fallback_enabled", 1),
        )
        if strategy.strategy == "custom":
            try:
                validate_custom_strategy(strategy.config or {})
            except ValueError as exc:
                # The router reports "rules[0].days: problem"; graft its path onto ours.
                where, sep, problem = str(exc).partition(": ")
                if sep and " " not in where:
                    raise ProvisionError(f"{s.at('config')}.{where}", problem) from exc
                raise ProvisionError(s.at("config"), str(exc)) from exc
        s.done()
    billing = None
    b = w.optional_object("billing")
    if b is not None:
        billing = _Billing(
            b.number("usage_limit_monthly"),
            b.number("alert_threshold_percentage", 80.0),
            b.flag("auto_pause_on_limit", 0),
            b.text("payment_method_id"),
            b.text("billing_email", pattern=EMAIL),
        )
        b.done()
    workspace = _Workspace(
        path=w.path,
        id=w.text("id"),
        name=w.required_text("name"),
        owner=w.required_text("owner", pattern=EMAIL).lower(),
        industry=w.text("industry"),
        status=w.text("status", choices=WORKSPACE_STATUSES, default="active") or "active",
        tier=w.text("subscription_tier", choices=SUBSCRIPTION_TIERS, default="starter") or "starter",
        timezone=w.text("timezone", default="UTC") or "UTC",
        trial_days=trial_days,
        trial_ends_at=trial_ends_at,
        members=members,
        numbers=numbers,
        agents=agents,
        providers=providers,
        strategy=strategy,
        billing=billing,
    )
    w.done()
    return workspace


# ------------------------------------------------------------------ applying


@dataclass(frozen=True)
class _Json:
    """A JSON column: equal when the stored text decodes to the same value."""

    value: Any


@dataclass(frozen=True)
class _Secret:
    """An encrypted column: equal when the stored token decrypts to the same plaintext."""

    plain: str


@dataclass(frozen=True)
class _KeepOr:
    """Keep the stored value when there is one; else store this."""

    value: Any


class _Applier:
    def __init__(self, tx: Executor, box: SecretBox, now: int) -> None:
        self.tx = tx
        self.box = box
        self.now = now
        self.result = ProvisionResult()

    def _stored(self, desired: Any, existing: Any, exists: bool) -> Any:
        if isinstance(desired, _Json):
            if exists and existing is not None and parse_json(existing) == desired.value:
                return existing
            return None if desired.value is None else dump_json(desired.value)
        if isinstance(desired, _Secret):
            if exists and existing is not None:
                try:
                    if self.box.decrypt(existing) == desired.plain:
                        return existing
                except SecretError:
                    pass  # stored under another key: replace it
            return self.box.encrypt(desired.plain)
        if isinstance(desired, _KeepOr):
            return existing if exists and existing is not None else desired.value
        return desired

    async def upsert(
        self,
        table: str,
        key: dict[str, Any],
        values: dict[str, Any],
        *,
        id_column: str | None = None,
        created: tuple[str, ...] = (),
        updated: str | None = None,
    ) -> Any:
        """Inserts or updates one row found by ``key``; returns its id column (or None)."""
        where = " AND ".join(f"{k} = ?" for k in key)
        read = [id_column] if id_column else []
        read += list(values)
        row = await self.tx.fetchone(
            f"SELECT {', '.join(read or list(key))} FROM {table} WHERE {where}", tuple(key.values())
        )
        if row is None:
            row_id = key.get(id_column) if id_column and id_column in key else new_id()
            stored = {k: self._stored(v, None, False) for k, v in values.items()}
            columns = {**key, **stored}
            if id_column and id_column not in key:
                columns[id_column] = row_id
            for name in created:
                columns[name] = self.now
            if updated:
                columns[updated] = self.now
            await self.tx.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                tuple(columns.values()),
            )
            self.result.created += 1
            return row_id if id_column else None
        offset = 1 if id_column else 0
        changes = {}
        for i, (name, desired) in enumerate(values.items()):
            existing = row[offset + i]
            stored = self._stored(desired, existing, True)
            if stored != existing:
                changes[name] = stored
        if changes:
            if updated:
                changes[updated] = self.now
            await self.tx.execute(
                f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in changes)} WHERE {where}",
                (*changes.values(), *key.values()),
            )
            self.result.updated += 1
        else:
            self.result.unchanged += 1
        return row[0] if id_column else None

    async def user_id(self, email: str, path: str) -> str:
        row = await self.tx.fetchone("SELECT id FROM client_users WHERE email = ?", (email,))
        if row is None:
            raise ProvisionError(path, f"no client user with email {email!r}")
        return str(row[0])

    async def apply(self, spec: _Spec) -> None:
        for user in spec.users:
            await self.upsert(
                "client_users",
                {"email": user.email},
                {
                    "name": user.name,
                    "password_hash": user.password_hash,
                    "is_active": user.is_active,
                    "email_verified": user.email_verified,
                },
                id_column="id",
                created=("created_at",),
                updated="updated_at",
            )
        for p in spec.providers:
            await self.upsert(
                "platform_provider_configs",
                {"provider": p.provider},
                {
                    "api_key_encrypted": _Secret(p.api_key),
                    "config": _Json(p.config),
                    "priority": p.priority,
                    "is_enabled": p.is_enabled,
                    "cost_per_unit": p.cost_per_unit,
                },
                created=("created_at",),
                updated="updated_at",
            )
        for w in spec.workspaces:
            await self.apply_workspace(w)

    async def apply_workspace(self, w: _Workspace) -> None:
        owner_id = await self.user_id(w.owner, f"{w.path}.owner")
        if w.trial_ends_at is not None:
            trial_ends_at: Any = w.trial_ends_at
        elif w.trial_days is not None:
            trial_ends_at = _KeepOr(self.now + w.trial_days * DAY_S)
        else:
            trial_ends_at = None
        values = {
            "industry": w.industry,
            "status": w.status,
            "subscription_tier": w.tier,
            "trial_ends_at": trial_ends_at,
            "timezone": w.timezone,
        }
        if w.id is not None:
            key: dict[str, Any] = {"id": w.id}
            values = {"name": w.name, "owner_id": owner_id, **values}
        else:
            key = {"owner_id": owner_id, "name": w.name}
        workspace_id = str(
            await self.upsert(
                "workspaces", key, values, id_column="id", created=("created_at",), updated="updated_at"
            )
        )
        members = list(w.members)
        if all(m.email != w.owner for m in members):
            members.insert(0, _Member(f"{w.path}.owner", w.owner, "owner", None))
        for m in members:
            user_id = await self.user_id(m.email, f"{m.path}.email")
            invited_by = await self.user_id(m.invited_by, f"{m.path}.invited_by") if m.invited_by else None
            await self.upsert(
                "workspace_members",
                {"workspace_id": workspace_id, "user_id": user_id},
                {"role": m.role, "invited_by": invited_by},
                created=("joined_at",),
            )
        for n in w.numbers:
            row = await self.tx.fetchone(
                "SELECT workspace_id FROM phone_numbers WHERE phone_number = ?", (n.number,)
            )
            if row is not None and row[0] != workspace_id:
                raise ProvisionError(f"{n.path}.number", f"{n.number} belongs to another workspace")
            await self.upsert(
                "phone_numbers",
                {"phone_number": n.number},
                {
                    "workspace_id": workspace_id,
                    "provider": n.provider,
                    "provider_sid": n.provider_sid,
                    "friendly_name": n.friendly_name,
                    "status": n.status,
                },
                id_column="id",
                created=("created_at",),
            )
        for a in w.agents:
            await self.apply_agent(workspace_id, a)
        for p in w.providers:
            key = {"workspace_id": workspace_id, "provider": p.provider}
            await self.upsert(
                "workspace_provider_configs",
                key,
                {
                    "uses_platform_key": 0 if p.api_key else 1,
                    "api_key_encrypted": _Secret(p.api_key) if p.api_key else None,
                    "config": _Json(p.config),
                    "is_enabled": p.is_enabled,
                },
                id_column="id",
                created=("created_at",),
                updated="updated_at",
            )
        if w.strategy is not None:
            await self.upsert(
                "workspace_provider_strategies",
                {"workspace_id": workspace_id},
                {
                    "strategy": w.strategy.strategy,
                    "config": _Json(w.strategy.config),
                    "fallback_enabled": w.strategy.fallback_enabled,
                },
                updated="updated_at",
            )
        if w.billing is not None:
            b = w.billing
            await self.upsert(
                "workspace_billing_settings",
                {"workspace_id": workspace_id},
                {
                    "usage_limit_monthly": b.usage_limit_monthly,
                    "alert_threshold_percentage": b.alert_threshold_percentage,
                    "auto_pause_on_limit": b.auto_pause_on_limit,
                    "payment_method_id": b.payment_method_id,
                    "billing_email": b.billing_email,
                },
                updated="updated_at",
            )
        await self.check_tier_limits(w, workspace_id)

    async def apply_agent(self, workspace_id: str, a: _Agent) -> None:
        number_id = None
        if a.phone_number is not None:
            row = await self.tx.fetchone(
                "SELECT id FROM phone_numbers WHERE phone_number = ? AND workspace_id = ?",
                (a.phone_number, workspace_id),
            )
            if row is None:
                raise ProvisionError(
                    f"{a.path}.phone_number", f"{a.phone_number} is not a number of this workspace"
                )
            number_id = row[0]
        key: dict[str, Any] = {"id": a.id} if a.id else {"workspace_id": workspace_id, "name": a.name}
        values: dict[str, Any] = {"workspace_id": workspace_id, "name": a.name} if a.id else {}
        values |= {
            "phone_number_id": number_id,
            "template_id": a.template_id,
            "config": _Json(a.config),
            "voice_provider": a.voice_provider,
            "voice_config": _Json(a.voice_config),
            "status": a.status,
            "activated_at": _KeepOr(self.now) if a.status == "live" else _KeepOr(None),
        }
        await self.upsert(
            "voice_agents", key, values, id_column="id", created=("created_at",), updated="updated_at"
        )

    async def check_tier_limits(self, w: _Workspace, workspace_id: str) -> None:
        tier = await self.tx.fetchone(
            "SELECT max_agents, max_phone_numbers FROM subscription_tiers WHERE tier_name = ?", (w.tier,)
        )
        if tier is None:
            raise ProvisionError(f"{w.path}.subscription_tier", f"tier {w.tier!r} is not defined")
        for what, table, limit in (
            ("agents", "voice_agents", tier[0]),
            ("phone_numbers", "phone_numbers", tier[1]),
        ):
            row = await self.tx.fetchone(
                f"SELECT COUNT(*) FROM {table} WHERE workspace_id = ?", (workspace_id,)
            )
            count = int(row[0]) if row is not None else 0
            if limit is not None and count > limit:
                raise ProvisionError(
                    f"{w.path}.{what}", f"{count} {what} exceed the {w.tier} tier limit of {limit}"
                )


async def provision(db: Database, data: Any, box: SecretBox, *, now: int) -> ProvisionResult:
    """Applies a decoded provisioning document in one transaction (all or nothing)."""
    spec = parse_spec(data)
    async with db.transaction() as tx:
        applier = _Applier(tx, box, now)
        await applier.apply(spec)
    log.info(
        "provisioned: %d created, %d updated, %d unchanged",
        applier.result.created,
        applier.result.updated,
        applier.result.unchanged,
    )
    return applier.result


def load_file(path: str | Path) -> Any:
    """Decodes a provisioning file: TOML for ``*.toml``, JSON otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProvisionError(str(path), f"cannot read: {exc.strerror}") from exc
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(raw.decode("utf-8"))
        return json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise ProvisionError(str(path), f"not valid {kind}: {exc}") from exc


async def provision_file(db: Database, path: str | Path, box: SecretBox, *, now: int) -> ProvisionResult:
    return await provision(db, load_file(path), box, now=now)


def demo_document() -> Any:
    return json.loads(resources.files("storage").joinpath("demo", "demo.json").read_text("utf-8"))


async def provision_demo(db: Database, box: SecretBox, *, now: int | None = None) -> ProvisionResult:
    """Migrates and provisions the demo tenant (``storage/demo/demo.json``); safe to repeat."""
    await migrate(db)
    return await provision(db, demo_document(), box, now=now_s() if now is None else now)
