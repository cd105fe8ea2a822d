"""MediaSocket on a real aiohttp server, driven by the websockets library's client (a separate
RFC 6455 implementation): handshake, fragments, ping, both close directions, size limit."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from gateway.media_socket import CLOSE_WAIT_S, MediaSocket

MAX = 1000
CLOSES = web.AppKey("closes", list[tuple[int | None, object]])
FLOODED = web.AppKey("flooded", list[int])


async def echo(request: web.Request) -> web.StreamResponse:
    sock, response = await MediaSocket.accept(request, max_message_bytes=MAX)
    closed = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    def on_message(opcode: int, payload: bytes) -> None:
        if payload == b"flood":  # until the send buffer is full: the client is not reading
            sent = 0
            while sock.send_text(b"x" * 60_000) and sent < 10_000:
                sent += 1
            sock.send_text(str(sent).encode())
            request.app[FLOODED].append(sent)
            return
        if payload == b"close-me":
            task = asyncio.get_running_loop().create_task(sock.close(4401, "stream token forged"))
            tasks.add(task)
            return
        if payload.startswith(b"pair:"):  # a frame and the mark that follows it: one write
            sock.send_text(payload[5:], b"mark")
            return
        sock.send_text(payload)

    sock.start(on_message, closed.set)
    await closed.wait()
    await asyncio.gather(*tasks)
    request.app[CLOSES].append((sock.close_code, sock.protocol_error))
    return response


@pytest.fixture
async def url(aiohttp_server: Any) -> str:
    app = web.Application()
    app[CLOSES] = []
    app[FLOODED] = []
    app.router.add_get("/media", echo)
    server = await aiohttp_server(app)
    url = f"ws://{server.host}:{server.port}/media"
    url_app[url] = app
    return url


url_app: dict[str, web.Application] = {}


async def test_text_echo_and_a_fragmented_message(url: str) -> None:
    async with connect(url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(["frag", "mented"])  # websockets sends an iterable as one fragmented message
        assert await ws.recv() == "fragmented"


async def test_a_message_and_its_follower_arrive_in_order(url: str) -> None:
    async with connect(url) as ws:
        await ws.send("pair:media")
        assert [await ws.recv(), await ws.recv()] == ["media", "mark"]


async def test_ping_is_answered(url: str) -> None:
    async with connect(url) as ws:
        pong = await ws.ping(b"abc")
        await asyncio.wait_for(pong, 2.0)


async def test_client_close_is_echoed(url: str) -> None:
    ws = await connect(url)
    await ws.close(4000, "caller left")
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4000


async def test_server_close_carries_code_and_reason(url: str) -> None:
    loop = asyncio.get_running_loop()
    async with connect(url) as ws:
        asked = loop.time()
        await ws.send("close-me")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 3.0)
        # The client answered at once; the server's close() returns on that answer (then aiohttp
        # drops TCP), not after waiting out CLOSE_WAIT_S for an answer it already had.
        assert loop.time() - asked < CLOSE_WAIT_S / 2
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "stream token forged")
    assert url_app[url][CLOSES] == [(4401, None)]


async def test_oversize_message_closes_with_1009(url: str) -> None:
    async with connect(url, max_size=None) as ws:
        await ws.send("x" * (MAX + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 3.0)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_plain_get_is_refused_with_400(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(url.replace("ws://", "http://")) as resp:
        assert resp.status == 400


async def test_unmasked_frames_from_aiohttp_client_are_fine_when_masked(url: str) -> None:
    """aiohttp's client (a third implementation) also interoperates."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.send_str("twilio")
        assert (await ws.receive(timeout=2.0)).data == "twilio"
        await ws.close()
        assert ws.close_code == 1000


async def test_sends_to_a_carrier_that_does_not_read_are_dropped_not_buffered(url: str) -> None:
    host_port = url.split("/")[2]
    host, port = host_port.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /media HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.write(Frame(Opcode.TEXT, b"flood").serialize(mask=True, extensions=[]))  # then never read
    try:
        for _ in range(200):
            if url_app[url][FLOODED]:
                break
            await asyncio.sleep(0.02)
        assert url_app[url][FLOODED], "the server answered"
        assert url_app[url][FLOODED][0] < 10_000, "it stopped queueing once 256 KiB waited unsent"
    finally:
        writer.transport.abort()
