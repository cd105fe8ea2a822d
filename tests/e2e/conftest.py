"""An in-process gateway on a real port, a real SQLite file, and the fake carriers' REST side."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.app import GatewayContext, close_context, create_app, drain, open_context
from gateway.config import Settings
from loadtest.carriers.plan import Credentials
from loadtest.carriers.telnyx_api import TelnyxApi
from tests.e2e.serve_process import ServeProcess, spawn_serve

TWILIO_TOKEN = "e2e-twilio-auth-token"


@dataclass
class RunningGateway:
    url: str
    ctx: GatewayContext
    credentials: Credentials
    telnyx_api: TelnyxApi
    http: aiohttp.ClientSession

    async def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, object]]:
        await self.ctx.recorder.flush()
        return [dict(zip(r.keys(), tuple(r), strict=True)) for r in await self.ctx.db.fetchall(sql, params)]


def make_settings(tmp_path: Path, telnyx_api_base: str, **overrides: object) -> tuple[Settings, Credentials]:
    seed = os.urandom(32)
    public = (
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    values: dict[str, object] = {
        "db_url": str(tmp_path / "gateway.db"),
        "twilio_auth_token": TWILIO_TOKEN,
        "telnyx_public_key": base64.b64encode(public).decode(),
        "telnyx_api_key": "KEYtest",
        "telnyx_api_base": telnyx_api_base,
        "var_dir": tmp_path / "var",
        "provider_connect_deadline_s": 3.0,
        "provider_attempt_timeout_s": 1.5,
        "health_sync_s": 0.5,
        # The freeze policy would hide a call's reference cycles from test_call_garbage; it runs in
        # test_gc_freeze and in every `voicegw serve` test (the default there).
        "gc_freeze": False,
    }
    values.update(overrides)
    settings = Settings.from_env(env={}, **values)
    creds = Credentials(twilio_auth_token=TWILIO_TOKEN, telnyx_private_key=base64.b64encode(seed).decode())
    return settings, creds


async def start_gateway(
    settings: Settings, creds: Credentials, telnyx_api: TelnyxApi
) -> tuple[RunningGateway, web.AppRunner]:
    ctx = await open_context(settings, demo=True)
    runner = web.AppRunner(create_app(ctx), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = aiohttp.ClientSession()
    return RunningGateway(f"http://127.0.0.1:{port}", ctx, creds, telnyx_api, http), runner


async def stop_gateway(gw: RunningGateway, runner: web.AppRunner) -> None:
    await drain(gw.ctx, 0.0)
    await runner.cleanup()
    await close_context(gw.ctx)
    await gw.http.close()


@pytest.fixture
async def telnyx_api() -> AsyncIterator[TelnyxApi]:
    api = TelnyxApi(api_key="KEYtest")
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def gateway(tmp_path: Path, telnyx_api: TelnyxApi) -> AsyncIterator[RunningGateway]:
    settings, creds = make_settings(tmp_path, telnyx_api.base_url)
    gw, runner = await start_gateway(settings, creds, telnyx_api)
    yield gw
    await stop_gateway(gw, runner)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ServeProcess]:
    sp = await spawn_serve(tmp_path)
    yield sp
    if sp.proc.returncode is None:
        sp.proc.kill()
        await sp.proc.wait()
