"""Fake carriers over real sockets: against the baseline echo, and against a scripted gateway stand-in."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from loadtest.baseline import BaselineServer
from loadtest.carriers import CallPlan, CallResult, Credentials, TelnyxApi, ToneBursts, place_call
from loadtest.carriers.signing import telnyx_private_key, twilio_signature
from loadtest.cli import register
from loadtest.report import PLOTS, format_table, write_report
from loadtest.runner import LoadConfig, Progress, run_load

SEED = base64.b64encode(bytes(range(32))).decode()
CREDS = Credentials(twilio_auth_token="test-token", telnyx_private_key=SEED)


@pytest.fixture
async def baseline() -> AsyncIterator[str]:
    async with BaselineServer() as server:
        yield server.url


async def test_calls_against_baseline_return_audio_and_measure_latency(baseline: str) -> None:
    plans = [
        CallPlan(carrier="twilio", duration_s=2.0, dtmf=((0.3, "1"), (0.6, "#")), keep_audio=True),
        CallPlan(carrier="twilio", duration_s=2.0, audio=ToneBursts(first_at_ms=200, period_ms=500)),
        CallPlan(carrier="telnyx", duration_s=2.0),
    ]
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(place_call(session, baseline, p, credentials=CREDS) for p in plans))
    for r in results:
        assert r.errors == [] and not r.refused and r.http_status == 200
        assert r.ended_by == "carrier" and r.call_id
        assert r.frames_sent == 100
        assert r.return_ratio >= 0.99
        assert r.histograms is not None  # the call's own: it was placed alone
        latency = r.histograms.latency.summary()
        assert r.bursts_sent >= 1 and r.bursts_lost == 0
        assert latency.count == r.bursts_answered == r.bursts_sent and latency.max < 500
        assert r.histograms.lateness.count == r.frames_sent
    assert results[0].dtmf_sent == 2
    assert results[1].bursts_sent == 4
    assert results[0].received_audio is not None and len(results[0].received_audio) == 16000


async def test_run_load_and_report(baseline: str, tmp_path: Path) -> None:
    config = LoadConfig(
        url=baseline, calls=4, ramp_s=0.2, duration_s=1.5, credentials=CREDS, sample_interval_s=0.25
    )
    seen: list[Progress] = []
    report = await run_load(config, progress=seen.append)
    assert report.placed == 4 and report.failed == 0 and report.refused == 0
    assert gc.get_freeze_count() == 0  # frozen while the calls streamed, given back at the end
    assert report.return_ratio >= 0.99
    assert report.latency.count == 4
    assert seen and seen[-1].placed == 4
    assert "return ratio" in format_table(report)
    out = tmp_path / "rep"
    page = write_report(report, out)
    data = orjson.loads((out / "report.json").read_bytes())
    assert data["calls"] == {"placed": 4, "refused": 0, "failed": 0}
    assert data["added_latency_ms"]["count"] == 4
    assert page.read_text().count("<img") == len(PLOTS)
    for name in PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 100_000


class ScriptedGateway:
    """Stands in for the gateway: verifies signatures, then plays a scripted mark/clear exchange."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.echoed_marks: list[str] = []
        self.dtmf: list[str] = []
        self.events: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""
        public = telnyx_private_key(SEED).public_key()
        assert isinstance(public, Ed25519PublicKey)
        self.public = public

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/twilio/voice", self.twilio_voice)
        app.router.add_post("/telnyx/voice", self.telnyx_voice)
        app.router.add_get("/twilio/media", self.media)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self.url

    async def twilio_voice(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        expected = twilio_signature("test-token", str(request.url), form)
        if request.headers.get("X-Twilio-Signature") != expected:
            return web.Response(status=403)
        if self.refuse:
            return web.Response(text="<Response><Say>Not in service.</Say><Hangup/></Response>")
        return web.Response(
            text=f'<Response><Connect><Stream url="ws://{request.host}/twilio/media">'
            '<Parameter name="call_id" value="c-1"/></Stream></Connect></Response>',
            content_type="text/xml",
        )

    async def telnyx_voice(self, request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers["telnyx-timestamp"]
        assert abs(int(ts) - time.time()) < 300
        self.public.verify(
            base64.b64decode(request.headers["telnyx-signature-ed25519"]), f"{ts}|".encode() + body
        )
        return web.Response(text="<Response><Say>Busy.</Say><Hangup/></Response>", content_type="text/xml")

    async def media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = ""
        tone = base64.b64encode(b"\x00" * 800).decode()  # 100 ms of loud audio
        async for msg in ws:
            data = orjson.loads(msg.data)
            self.events.append(data["event"])
            if data["event"] == "start":
                sid = data["streamSid"]
                send = ws.send_str
                await send(
                    orjson.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "idle"}}).decode()
                )
                await send(
                    orjson.dumps({"event": "media", "streamSid": sid, "media": {"payload": tone}}).decode()
                )
                await send(
                    orjson.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "played"}}).decode()
                )
            elif data["event"] == "mark":
                name = data["mark"]["name"]
                self.echoed_marks.append(name)
                if name == "played":
                    for _ in range(5):  # 500 ms queued, then barge-in
                        await ws.send_str(
                            orjson.dumps(
                                {"event": "media", "streamSid": sid, "media": {"payload": tone}}
                            ).decode()
                        )
                    await ws.send_str(
                        orjson.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "cut"}}).decode()
                    )
                    await ws.send_str(orjson.dumps({"event": "clear", "streamSid": sid}).decode())
                if name == "cut":
                    await ws.close()  # the gateway ends the call
            elif data["event"] == "dtmf":
                self.dtmf.append(data["dtmf"]["digit"])
        return ws

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def test_marks_clear_and_gateway_hangup() -> None:
    gw = ScriptedGateway()
    await gw.start()
    try:
        async with aiohttp.ClientSession() as session:
            plan = CallPlan(duration_s=5.0, hangup=False, dtmf=((0.0, "7"),), keep_audio=True)
            r = await place_call(session, gw.url, plan, credentials=CREDS)
    finally:
        await gw.stop()
    assert r.errors == []
    assert gw.echoed_marks == ["idle", "played", "cut"]
    assert (r.marks_received, r.marks_echoed_played, r.marks_echoed_cleared, r.clears_received) == (
        3,
        2,
        1,
        1,
    )
    assert r.ended_by == "gateway"
    assert gw.dtmf == ["7"]
    assert r.played_audio is not None and r.received_audio is not None
    assert len(r.received_audio) == 4800 and len(r.played_audio) < len(r.received_audio)
    assert r.bytes_cleared == len(r.received_audio) - len(r.played_audio)


async def test_refusals_and_bad_credentials() -> None:
    gw = ScriptedGateway(refuse=True)
    await gw.start()
    try:
        async with aiohttp.ClientSession() as session:
            refused = await place_call(session, gw.url, CallPlan(), credentials=CREDS)
            telnyx = await place_call(session, gw.url, CallPlan(carrier="telnyx"), credentials=CREDS)
            wrong = Credentials(twilio_auth_token="wrong")
            forbidden = await place_call(session, gw.url, CallPlan(), credentials=wrong)
    finally:
        await gw.stop()
    assert refused.refused and refused.refusal_text == "Not in service." and not refused.failed
    assert telnyx.refused and telnyx.refusal_text == "Busy."
    assert forbidden.failed and forbidden.http_status == 403


async def test_telnyx_rest_hangup_ends_the_call(baseline: str) -> None:
    async with TelnyxApi(api_key="k") as api, aiohttp.ClientSession() as session:
        seen: list[CallResult] = []
        call = asyncio.create_task(
            place_call(
                session,
                baseline,
                CallPlan(carrier="telnyx", duration_s=10.0, hangup=False),
                credentials=CREDS,
                telnyx_api=api,
                on_placed=seen.append,
            )
        )
        await asyncio.sleep(0.5)
        assert seen[0].frames_sent >= 10
        hangup = f"{api.base_url}/v2/calls/{seen[0].call_sid}/actions/hangup"
        async with session.post(hangup, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        async with session.post(hangup, headers={"Authorization": "Bearer k"}) as resp:
            assert resp.status == 200
        result = await asyncio.wait_for(call, 5)
        async with session.post(hangup, headers={"Authorization": "Bearer k"}) as resp:
            assert resp.status == 422
            assert (await resp.json())["errors"][0]["code"] == "90018"
    assert result.ended_by == "gateway-rest" and result.errors == []
    assert api.hangups == 1


async def test_cli_runs_against_baseline(
    baseline: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "cli-report"
    argv = ["loadtest", "--url", baseline, "--calls", "2", "--duration", "1", "--twilio-auth-token", "t"]
    args = parser.parse_args([*argv, "--report", str(out)])
    rc = await asyncio.to_thread(args.func, args)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "calls placed / refused / failed  2 / 0 / 0" in printed
    assert (out / "report.html").exists()


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """A one-test fake gateway on a free port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_telnyx_reorders_frames_when_asked() -> None:
    chunks: list[int] = []

    async def voice(request: web.Request) -> web.Response:
        return web.Response(
            text=f'<Response><Connect><Stream url="ws://{request.host}/telnyx/media" '
            'bidirectionalMode="rtp"/></Connect></Response>'
        )

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            data = orjson.loads(msg.data)
            if data["event"] == "media":
                chunks.append(int(data["media"]["chunk"]))
                await ws.send_str(orjson.dumps({"event": "media", "media": data["media"]}).decode())
        return ws

    app = web.Application()
    app.router.add_post("/telnyx/voice", voice)
    app.router.add_get("/telnyx/media", media)
    async with serve(app) as url, aiohttp.ClientSession() as session:
        plan = CallPlan(carrier="telnyx", duration_s=1.0, reorder_every=10)
        r = await place_call(session, url, plan, credentials=CREDS)
    assert r.errors == [] and r.frames_sent == 50
    assert sorted(chunks) == list(range(1, 51))
    swapped = [i for i in range(49) if chunks[i] > chunks[i + 1]]
    assert len(swapped) == 4  # frames 10, 20, 30, 40 arrive after their successors; 50 is last
    assert r.bursts_answered  # reordering never holds a burst onset, so latency is still measured
    with pytest.raises(ValueError, match="Telnyx only"):
        CallPlan(carrier="twilio", reorder_every=10)


class Tap:
    def __init__(self) -> None:
        self.messages: list[tuple[float, bytes]] = []
        self.closed_at: float | None = None

    def message(self, at: float, data: bytes) -> None:
        self.messages.append((at, data))

    def closed(self, at: float) -> None:
        self.closed_at = at


async def test_broken_framing_is_a_violation_and_the_tap_sees_messages() -> None:
    async def voice(request: web.Request) -> web.Response:
        return web.Response(
            text=f'<Response><Connect><Stream url="ws://{request.host}/twilio/media"/></Connect></Response>'
        )

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if orjson.loads(msg.data)["event"] == "start":
                await ws.send_bytes(b"\x00")  # Twilio wants JSON text frames
                await ws.send_str('{"event":"clear"}')  # no streamSid: a Twilio violation
                assert request.transport is not None
                request.transport.write(b"\x81\x81abcd" + bytes([ord("x") ^ ord("a")]))  # masked: broken
        return ws

    app = web.Application()
    app.router.add_post("/twilio/voice", voice)
    app.router.add_get("/twilio/media", media)
    tap = Tap()
    async with serve(app) as url, aiohttp.ClientSession() as session:
        plan = CallPlan(duration_s=5.0, hangup=False)
        r = await place_call(session, url, plan, credentials=CREDS, tap=tap)
    assert r.protocol_violations == 3 and r.ended_by == "error" and r.close_code == 1002
    assert any("binary frame" in e for e in r.errors)
    assert any("WebSocket framing: server frames must not be masked" in e for e in r.errors)
    assert [data for _, data in tap.messages] == [b'{"event":"clear"}']
    assert tap.closed_at is not None and tap.closed_at >= tap.messages[0][0]
