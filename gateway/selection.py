"""Glue between the pure router and the I/O around it.

Reads routing inputs from the database (cached briefly per workspace), asks ``routing.route``
for ordered candidates, turns each into a ``ProviderAttempt`` whose ``connect`` builds the
``ProviderContext`` (decrypting the right key only at connect time), keeps the health board
fed by every call, persists it to ``provider_health_status`` and merges other processes' rows,
and holds provider pre-connections opened while the webhook is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from gateway.session import ProviderAttempt, discard_connection
from gateway.tracebacks import drop_tracebacks
from providers.base import (
    MULAW_8000,
    ErrorKind,
    PlaybackClock,
    ProviderContext,
    ProviderError,
    ProviderSession,
    Transcript,
)
from providers.registry import KNOWN_PROVIDERS, connector
from routing.health import HealthBoard, HealthPolicy
from routing.model import (
    KEYLESS_PROVIDERS,
    AgentInfo,
    CallContext,
    Decision,
    PlatformProvider,
    RoutingSnapshot,
    Strategy,
    WorkspaceProvider,
)
from routing.probes import ProbePlan
from routing.router import route
from storage.calls import fail_unanswered_stmt, load_call_setup
from storage.models import PlatformProviderConfig
from storage.models import ProviderHealth as HealthRow
from storage.provider_configs import (
    RoutingInputs,
    list_platform_configs,
    load_health,
    load_routing_inputs,
    upsert_health_stmt,
)
from storage.secrets import SecretError

if TYPE_CHECKING:
    from gateway.app import GatewayContext

log = logging.getLogger(__name__)

INPUTS_CACHE_S = 5.0  # provider configs change rarely; a call setup should not always hit the DB


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(slots=True)
class CallSetup:
    """What the webhook learned about a call; enough to route and bridge it."""

    call_id: str
    carrier: str
    workspace_id: str
    workspace_timezone: str
    agent_id: str
    agent_voice_provider: str
    agent_voice_config: str
    agent_config: str
    caller_number: str
    called_number: str


@dataclass(slots=True)
class Plan:
    attempts: list[ProviderAttempt]
    fallback_enabled: bool
    decision: Decision


class PlaybackProxy:
    """Lets a provider connected before its call session existed ask that session later."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: PlaybackClock | None = None

    def played_ms(self, item_id: str) -> int:
        return self.target.played_ms(item_id) if self.target is not None else 0


@dataclass(slots=True)
class _Preconnect:
    task: asyncio.Task[ProviderSession]
    expires: float
    playback: PlaybackProxy
    plan: Plan


class BoardObserver:
    """Feeds one call's provider outcomes into the health board."""

    __slots__ = ("board", "region")

    def __init__(self, board: HealthBoard, region: str) -> None:
        self.board = board
        self.region = region

    def connected(self, provider: str, latency_s: float) -> None:
        self.board.observe_connect(provider, self.region, latency_s * 1000, time.monotonic())

    def failed(self, provider: str, kind: str, message: str, key_source: str) -> None:
        self.board.observe_error(
            provider, self.region, kind, time.monotonic(), message=message, key_source=key_source
        )

    def first_audio(self, provider: str, latency_s: float) -> None:
        self.board.observe_first_audio(provider, self.region, latency_s * 1000, time.monotonic())

    def dropped(self, provider: str, reason: str) -> None:
        self.board.observe_drop(provider, self.region, time.monotonic())

    def admit(self, provider: str) -> bool:
        """Half-open breakers admit one trial call at a time; closed ones everyone."""
        return self.board.try_acquire_trial(provider, self.region, time.monotonic())


class ProviderSelector:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.board = HealthBoard(
            HealthPolicy(cooldown_s=ctx.settings.breaker_cooldown_s),
            node_id=f"{socket.gethostname()}:{os.getpid()}:{id(self):x}",
        )
        self.region = ctx.settings.region
        self.observer = BoardObserver(self.board, self.region)
        self._inputs: dict[str, tuple[float, RoutingInputs]] = {}
        self._preconnects: dict[str, _Preconnect] = {}
        self._sync_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._probe_plan = ProbePlan(ctx.settings.probe_s) if ctx.settings.probe_s > 0 else None
        self._setups: dict[str, tuple[float, CallSetup]] = {}
        # After this, no media socket can start any more (its stream token has expired).
        self._setup_ttl_s = ctx.settings.stream_token_ttl_s + ctx.settings.start_timeout_s

    # ------------------------------------------------------------------ call setups
    def remember(self, setup: CallSetup) -> None:
        """Keep the webhook's findings for the media socket (usually served by this process)."""
        self._setups[setup.call_id] = (time.monotonic(), setup)

    def forget(self, call_id: str) -> None:
        self._setups.pop(call_id, None)

    async def lookup(self, call_id: str) -> CallSetup | None:
        """The call's setup: from memory, else rebuilt from the database (another worker answered)."""
        known = self._setups.get(call_id)
        if known is not None:
            return known[1]
        found = await load_call_setup(self.ctx.db, call_id)
        if found is None:
            return None
        call, agent, workspace, number = found
        setup = CallSetup(
            call_id=call.id,
            carrier=number.provider,
            workspace_id=workspace.id,
            workspace_timezone=workspace.timezone or "UTC",
            agent_id=agent.id,
            agent_voice_provider=agent.voice_provider,
            agent_voice_config=agent.voice_config,
            agent_config=agent.config,
            caller_number=call.caller_number,
            called_number=number.phone_number,
        )
        self._setups[call_id] = (time.monotonic(), setup)
        return setup

    # ------------------------------------------------------------------ routing
    async def _routing_inputs(self, workspace_id: str) -> RoutingInputs:
        now = time.monotonic()
        cached = self._inputs.get(workspace_id)
        if cached is not None and now - cached[0] < INPUTS_CACHE_S:
            return cached[1]
        inputs = await load_routing_inputs(self.ctx.db, workspace_id)
        self._inputs[workspace_id] = (now, inputs)
        return inputs

    async def plan(self, setup: CallSetup) -> Plan:
        inputs = await self._routing_inputs(setup.workspace_id)
        agent = AgentInfo(setup.agent_id, setup.agent_voice_provider, _json(setup.agent_voice_config))
        try:
            tz = ZoneInfo(setup.workspace_timezone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            tz = ZoneInfo("UTC")
        strategy = None
        if inputs.strategy is not None:
            strategy = Strategy(
                name=inputs.strategy.strategy,  # type: ignore[arg-type]
                config=_json(inputs.strategy.config),
                fallback_enabled=bool(inputs.strategy.fallback_enabled),
            )
        snapshot = RoutingSnapshot(
            platform=[
                PlatformProvider(
                    provider=p.provider,
                    has_key=bool(p.api_key_encrypted),
                    config=_json(p.config),
                    priority=int(p.priority or 0),
                    is_enabled=bool(p.is_enabled),
                    cost_per_unit=p.cost_per_unit,
                )
                for p in inputs.platform
                if p.provider in KNOWN_PROVIDERS
            ],
            workspace=[
                WorkspaceProvider(
                    provider=w.provider,
                    uses_platform_key=bool(w.uses_platform_key),
                    has_own_key=bool(w.api_key_encrypted),
                    config=_json(w.config),
                    is_enabled=bool(w.is_enabled),
                )
                for w in inputs.workspace
            ],
            strategy=strategy,
            agent=agent,
            health=self.board.view(time.monotonic()),
            call=CallContext(
                caller_number=setup.caller_number,
                local_time=datetime.now(UTC).astimezone(tz),
                region=self.region,
            ),
        )
        decision = route(snapshot)
        attempts = [
            self._attempt(setup, inputs, agent, c.provider, c.key_source, c.reason)
            for c in decision.candidates
        ]
        fallback = strategy.fallback_enabled if strategy is not None else True
        return Plan(attempts=attempts, fallback_enabled=fallback, decision=decision)

    def _attempt(
        self,
        setup: CallSetup,
        inputs: RoutingInputs,
        agent: AgentInfo,
        provider: str,
        key_source: str,
        reason: str,
    ) -> ProviderAttempt:
        platform = next((p for p in inputs.platform if p.provider == provider), None)
        workspace = next((w for w in inputs.workspace if w.provider == provider), None)
        config: dict[str, Any] = {**_json(platform.config if platform else None)}
        config.update(_json(workspace.config if workspace else None))
        voice_config: Mapping[str, Any] = agent.voice_config_for(provider) or {}
        agent_config = _json(setup.agent_config)
        box = self.ctx.box
        playback = PlaybackProxy()

        async def connect(history: Sequence[Transcript]) -> ProviderSession:
            api_key: str | None = None
            encrypted = None
            if key_source == "workspace" and workspace is not None:
                encrypted = workspace.api_key_encrypted
            elif key_source == "platform" and platform is not None:
                encrypted = platform.api_key_encrypted
            if encrypted:
                try:
                    api_key = box.decrypt(encrypted)
                except SecretError as exc:
                    raise ProviderError(ErrorKind.CONFIG, f"stored key unusable: {exc}") from None
            ctx = ProviderContext(
                call_id=setup.call_id,
                provider=provider,
                http=self.ctx.http,
                api_key=api_key,
                config=config,
                voice_config=voice_config,
                agent_config=agent_config,
                preferred_format=MULAW_8000,
                caller_number=setup.caller_number,
                called_number=setup.called_number,
                history=history,
                playback=playback,
                connect_timeout=self.ctx.settings.provider_attempt_timeout_s,
            )
            return await connector(provider)(ctx)

        return ProviderAttempt(
            provider=provider,
            reason=reason,
            connect=connect,
            key_source=key_source,
            playback=playback,
            admit=lambda: self.observer.admit(provider),
        )

    # ------------------------------------------------------------------ pre-connect
    def preconnect(self, call_id: str, plan: Plan) -> None:
        """Open the first candidate now, while the carrier is still fetching our TwiML/TeXML."""
        if not plan.attempts or not self.ctx.settings.preconnect:
            return
        first = plan.attempts[0]
        task: asyncio.Task[ProviderSession] = asyncio.ensure_future(first.connect(()))
        task.add_done_callback(_consume_exception)
        self._preconnects[call_id] = _Preconnect(
            task=task,
            expires=time.monotonic() + self.ctx.settings.preconnect_ttl_s,
            playback=first.playback,
            plan=plan,
        )

    def take_preconnect(self, call_id: str) -> tuple[Plan, asyncio.Task[ProviderSession]] | None:
        pre = self._preconnects.pop(call_id, None)
        if pre is None:
            return None
        return pre.plan, pre.task

    async def tick(self, now: float) -> None:
        """Close pre-connections whose media socket never came; close calls that never streamed."""
        for call_id, pre in list(self._preconnects.items()):
            if now > pre.expires:
                self._preconnects.pop(call_id, None)
                log.info("call %s: unused provider pre-connection closed", call_id)
                await discard_connection(pre.task)
        for call_id, (created, _setup) in list(self._setups.items()):
            if now - created > self._setup_ttl_s and call_id not in self.ctx.live:
                self._setups.pop(call_id, None)
                self.ctx.recorder.statement(fail_unanswered_stmt(call_id, int(time.time())))

    # ------------------------------------------------------------------ health persistence
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sync_task is None:
            self._sync_task = loop.create_task(self._sync_loop())
        if self._probe_plan is not None and self._probe_task is None:
            self._probe_task = loop.create_task(self._probe_loop(self._probe_plan))

    # ------------------------------------------------------------------ active probes
    async def _probe_loop(self, plan: ProbePlan) -> None:
        """Every second: connect-and-close the enabled providers that are due (``routing.probes``)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                configs = [
                    p
                    for p in await list_platform_configs(self.ctx.db)
                    if p.is_enabled and p.provider in KNOWN_PROVIDERS and p.provider not in KEYLESS_PROVIDERS
                ]
                now = time.monotonic()
                by_name = {p.provider: p for p in configs}
                due = plan.due(((p.provider, self.region) for p in configs), self.board.view(now), now)
                for provider, region in due:
                    if not self.board.try_acquire_trial(provider, region, now):
                        continue
                    plan.mark_probed(provider, region, now)
                    await self.probe(by_name[provider])
            except Exception as exc:
                log.warning("provider probe round failed: %s", exc)

    async def probe(self, config: PlatformProviderConfig) -> None:
        """One cheap connect-and-close with the platform key; the outcome feeds the health board.

        Providers that need an agent to connect take it from the platform config's ``probe`` object
        (e.g. ``{"probe": {"agent_id": "..."}}``), used as the probe's ``voice_config``.
        """
        provider = config.provider
        platform_config = _json(config.config)
        t0 = time.monotonic()
        try:
            ctx = ProviderContext(
                call_id=f"probe-{provider}",
                provider=provider,
                http=self.ctx.http,
                api_key=self.ctx.box.decrypt(config.api_key_encrypted) if config.api_key_encrypted else None,
                config=platform_config,
                voice_config=platform_config.get("probe") or {},
                connect_timeout=self.ctx.settings.provider_attempt_timeout_s,
            )
            session = await asyncio.wait_for(connector(provider)(ctx), ctx.connect_timeout)
        except (ProviderError, TimeoutError, OSError, SecretError) as exc:
            drop_tracebacks(exc)
            kind = exc.kind.value if isinstance(exc, ProviderError) else ErrorKind.TIMEOUT.value
            if isinstance(exc, SecretError):
                kind = ErrorKind.CONFIG.value
            self.board.observe_error(provider, self.region, kind, time.monotonic(), message=f"probe: {exc}")
            log.info("probe of %s failed: %s", provider, exc)
            return
        self.board.observe_connect(provider, self.region, (time.monotonic() - t0) * 1000, time.monotonic())
        await session.close()

    async def _sync_loop(self) -> None:
        interval = self.ctx.settings.health_sync_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync_once()
            except Exception as exc:  # the database may be briefly away; try again next round
                log.warning("health board sync failed: %s", exc)

    async def sync_once(self) -> None:
        """Persist our view of the board and adopt what other gateway processes persisted."""
        now, wall = time.monotonic(), int(time.time())
        for row in self.board.to_rows(wall, now):
            self.ctx.recorder.statement(upsert_health_stmt(HealthRow(**row)))
        rows = await load_health(self.ctx.db)
        self.board.merge_rows([_health_row_dict(r) for r in rows], now, wall)

    async def close(self) -> None:
        for task in (self._sync_task, self._probe_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for pre in self._preconnects.values():
            await discard_connection(pre.task)
        self._preconnects.clear()


def _health_row_dict(row: Any) -> dict[str, Any]:
    return {
        "provider": row.provider,
        "region": row.region,
        "status": row.status,
        "last_check": row.last_check,
        "error_rate": row.error_rate,
        "avg_latency": row.avg_latency,
        "details": row.details,
    }


def _consume_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved here so an unused failed pre-connect never logs "never retrieved"
