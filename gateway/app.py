"""The aiohttp application and the per-process state every handler shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from gateway.carriers.base import CLOSE_START_TIMEOUT
from gateway.config import Settings
from gateway.gc_freeze import keep_calls_out_of_gc
from gateway.gc_pauses import watch_gc_pauses
from gateway.loop_lag import watch_loop_lag
from gateway.metrics import GatewayStats
from gateway.recorder import CallRecorder, replay_spill_files
from storage.billing import bill_failed_calls, bill_recovered_calls
from storage.db import Database, open_database
from storage.migrate import migrate
from storage.recovery import recover
from storage.secrets import SecretBox, load_secret_box
from storage.writer import Writer

if TYPE_CHECKING:
    from gateway.selection import ProviderSelector
    from gateway.session import CallSession

log = logging.getLogger(__name__)

CTX_KEY: web.AppKey[GatewayContext] = web.AppKey("voicegw", object)  # type: ignore[arg-type]


@dataclass(slots=True)
class LiveCall:
    session: CallSession
    close_socket: Any  # async callable(code, reason) closing the carrier socket


@dataclass(slots=True)
class PendingSocket:
    """A media socket that has not sent a valid ``start`` yet (watched for the start timeout)."""

    opened_at: float
    close: Any


@dataclass(slots=True)
class GatewayContext:
    settings: Settings
    db: Database
    writer: Writer
    box: SecretBox
    http: aiohttp.ClientSession
    token_secret: bytes  # HMAC key of media-stream tokens, identical on every node
    stats: GatewayStats = field(default_factory=GatewayStats)
    recorder: CallRecorder = field(init=False)
    selector: ProviderSelector = field(init=False)
    live: dict[str, LiveCall] = field(default_factory=dict)
    pending: dict[int, PendingSocket] = field(default_factory=dict)
    draining: bool = False
    no_live_calls: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        from gateway.selection import ProviderSelector

        self.recorder = CallRecorder(
            self.writer,
            spill_dir=self.settings.var_dir / "spill",
            max_backlog=self.settings.recorder_backlog,
        )
        self.no_live_calls.set()
        self.selector = ProviderSelector(self)

    async def watchdog(self) -> None:
        """Once a second: start timeouts, idle carriers, max duration, silent providers."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._check_timers(time.monotonic())
            except Exception:  # one bad call must not stop the timers of every other call
                log.exception("watchdog tick failed")

    async def _check_timers(self, now: float) -> None:
        s = self.settings
        for key, pending in list(self.pending.items()):
            if now - pending.opened_at > s.start_timeout_s:
                self.pending.pop(key, None)
                self.stats.protocol_errors["start_timeout"] += 1
                log.warning("media socket closed: no valid start within %.0f s", s.start_timeout_s)
                await pending.close(CLOSE_START_TIMEOUT, "start timeout")
        for call_id, live in list(self.live.items()):
            session = live.session
            if session.ending:
                continue
            if now - session.last_carrier_msg > s.idle_timeout_s:
                log.warning("call %s: carrier idle for %.0f s, ending", call_id, s.idle_timeout_s)
                session.carrier_gone("carrier_idle_timeout")
                await live.close_socket(
                    CLOSE_START_TIMEOUT, "idle timeout"
                )  # same code: the carrier went quiet
            elif now - session.started_mono > s.max_call_s:
                log.info("call %s: max duration reached", call_id)
                session.request_end("completed", "max_duration")
            else:
                session.check_timers(now)
        await self.selector.tick(now)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A per-call background step (never per frame), awaited or cancelled on shutdown."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def call_started(self, call_id: str, live: LiveCall) -> None:
        self.live[call_id] = live
        self.stats.live_calls = len(self.live)
        self.stats.calls_started += 1
        self.no_live_calls.clear()

    def call_ended(self, call_id: str) -> None:
        self.live.pop(call_id, None)
        self.stats.live_calls = len(self.live)
        if not self.live:
            self.no_live_calls.set()

    def writer_stats(self) -> dict[str, float]:
        st = self.writer.stats
        return {
            "depth": float(self.writer.depth),
            "last_flush_s": float(st.last_flush_s),
            "max_flush_s": float(st.max_flush_s),
            "rows": float(st.rows_written),
            "retries": float(st.retries),
        }


async def open_context(
    settings: Settings, *, demo: bool = False, recover_calls: bool = True
) -> GatewayContext:
    """Open the database (migrate, recover crashed calls), the writer and the HTTP client.

    Recovery: an embedded SQLite database has one gateway, so every open call is a crash leftover.
    On PostgreSQL several nodes share the calls table: only this node's calls are closed at once,
    other nodes' only when older than the longest possible call.
    """
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    db = await open_database(settings.db_url)
    await migrate(db)
    box = load_secret_box(dev_key_path=settings.var_dir / "secret.key")
    token_secret = settings.stream_token_secret or box.derive("stream-token")
    if demo:
        from storage.provision import provision_demo

        await provision_demo(db, box)
    if recover_calls:
        # Rows a dead process spilled come first: recovery dates a crashed call by its last event.
        await replay_spill_files(db, settings.var_dir / "spill")
        now = int(time.time())
        if db.dialect == "postgresql":
            stale = int(settings.max_call_s) + 60
            recovered = await recover(db, now, stale_after_s=stale, node_id=settings.node_id)
        else:
            recovered = await recover(db, now)
        if recovered:
            log.warning("recovered %d call(s) left open by a previous crash", len(recovered))
        await bill_recovered_calls(db, now)  # each logs what it billed
        await bill_failed_calls(db, now)
    writer = Writer(db, flush_interval_s=settings.writer_flush_ms / 1000, max_batch=settings.writer_batch)
    await writer.start()
    # One provider WebSocket per live call: aiohttp's default pool (100 connections) would make
    # call 101's provider wait for another call to end. No cap; DNS answers cached briefly.
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    return GatewayContext(
        settings=settings, db=db, writer=writer, box=box, http=http, token_secret=token_secret
    )


async def close_context(ctx: GatewayContext) -> None:
    for task in ctx._tasks:
        task.cancel()
    for task in ctx._tasks:
        with contextlib.suppress(BaseException):
            await task
    if ctx._background:  # e.g. carrier hang-ups still in flight
        await asyncio.wait(ctx._background, timeout=6.0)
    await ctx.selector.close()
    await ctx.recorder.flush()
    await ctx.writer.close()
    await ctx.http.close()
    await ctx.db.close()


def create_app(ctx: GatewayContext, *, include_internal: bool = True) -> web.Application:
    from gateway import internal, media, webhooks

    app = web.Application(client_max_size=256 * 1024)
    app[CTX_KEY] = ctx
    app.add_routes(webhooks.routes())
    app.add_routes(media.routes())
    if include_internal:
        app.add_routes(internal.routes())

    async def _start_background(app: web.Application) -> None:
        if not ctx._tasks:
            loop = asyncio.get_running_loop()
            ctx._tasks.append(loop.create_task(ctx.watchdog()))
            ctx._tasks.append(loop.create_task(watch_loop_lag(ctx.stats.loop_lag.observe)))
            ctx._tasks.append(loop.create_task(watch_gc_pauses(ctx.stats.observe_gc_pause)))
            if ctx.settings.gc_freeze:
                stats = ctx.stats
                policy = keep_calls_out_of_gc(lambda: stats.calls_started, lambda: stats.live_calls)
                ctx._tasks.append(loop.create_task(policy))
            ctx.selector.start()

    app.on_startup.append(_start_background)
    return app


def internal_app(ctx: GatewayContext) -> web.Application:
    from gateway import internal

    app = web.Application()
    app[CTX_KEY] = ctx
    app.add_routes(internal.routes())
    return app


async def drain(ctx: GatewayContext, deadline_s: float) -> None:
    """Stop taking calls, let live ones finish until the deadline, end the rest, flush rows."""
    ctx.draining = True
    log.info("draining: %d live call(s), deadline %.0f s", len(ctx.live), deadline_s)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.no_live_calls.wait(), deadline_s)
    for call_id, live in list(ctx.live.items()):
        log.info("drain deadline: ending call %s", call_id)
        live.session.request_end("completed", "gateway_shutdown")
    # Their media handlers close and bill them, all at once; one overall bound for stragglers.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.no_live_calls.wait(), 10.0)
    await ctx.recorder.flush()
