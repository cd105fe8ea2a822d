"""The cheapest server that speaks enough Twilio/Telnyx to be called: the yardstick for ``voicegw bench``.

It answers the voice webhook with a stream pointing at itself and echoes every inbound media payload back
verbatim (no decode, no routing, no provider, no signature check), so the gateway's figures can be
reported as ratios to "the network, aiohttp and JSON alone".

Run: ``python -m loadtest.baseline --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
from xml.sax.saxutils import quoteattr

import orjson
from aiohttp import WSMsgType, web


def _stream_xml(ws_url: str, extra_attrs: str = "") -> str:
    call_id = secrets.token_hex(8)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f"<Stream url={quoteattr(ws_url)}{extra_attrs}>"
        f'<Parameter name="call_id" value="{call_id}"/><Parameter name="token" value="baseline"/>'
        "</Stream></Connect></Response>"
    )


def _ws_url(request: web.Request, path: str) -> str:
    scheme = "wss" if request.secure else "ws"
    return f"{scheme}://{request.host}{path}"


async def twilio_voice(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text=_stream_xml(_ws_url(request, "/twilio/media")), content_type="text/xml")


async def telnyx_voice(request: web.Request) -> web.Response:
    await request.read()
    attrs = ' bidirectionalMode="rtp" bidirectionalCodec="PCMU"'
    return web.Response(text=_stream_xml(_ws_url(request, "/telnyx/media"), attrs), content_type="text/xml")


async def twilio_media(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    stream_sid = ""
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        data = orjson.loads(msg.data)
        event = data.get("event")
        if event == "media":
            await ws.send_str(
                f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{data["media"]["payload"]}"}}}}'
            )
        elif event == "start":
            stream_sid = data["streamSid"]
        elif event == "stop":
            break
    await ws.close()
    return ws


async def telnyx_media(request: web.Request) -> web.WebSocketResponse:
    """Echo for PCMU calls (what the TeXML above asks for); other inbound codecs are echoed as-is."""
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        data = orjson.loads(msg.data)
        event = data.get("event")
        if event == "media":
            await ws.send_str(f'{{"event":"media","media":{{"payload":"{data["media"]["payload"]}"}}}}')
        elif event == "stop":
            break
    await ws.close()
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/twilio/voice", twilio_voice)
    app.router.add_get("/twilio/media", twilio_media)
    app.router.add_post("/telnyx/voice", telnyx_voice)
    app.router.add_get("/telnyx/media", telnyx_media)
    return app


class BaselineServer:
    """Runs the baseline in-process (tests, bench); ``url`` is set after ``start``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self._runner = web.AppRunner(make_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self.url = f"http://{self._host}:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BaselineServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _serve(host: str, port: int) -> None:
    server = BaselineServer(host, port)
    url = await server.start()
    print(f"baseline echo listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
