"""The generator's own WebSocket client against real servers: aiohttp's, and a hand-driven raw one.

The raw server checks what aiohttp's would hide (every client frame masked, with its own key) and
sends what aiohttp's never does (fragments, interleaved pings, broken frames).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loadtest.carriers import ws as wsmod
from loadtest.carriers.ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ClientWebSocket,
    FrameError,
    FrameParser,
    HandshakeError,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(request: bytes) -> bytes:
    """Sec-WebSocket-Accept for an upgrade request, computed here (not by the code under test)."""
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def server_frame(
    opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawPeer:
    """The server side of one accepted connection: raw frames out, parsed client frames in."""

    def __init__(self, request: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.request = request
        self.reader = reader
        self.writer = writer
        self.keys: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> tuple[bool, int, bytes]:
        """The next client frame as (fin, opcode, unmasked payload); fails unless it was masked."""
        b0, b1 = await self.reader.readexactly(2)
        assert b1 & 0x80, "client frame not masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        key = await self.reader.readexactly(4)
        self.keys.append(key)
        masked = await self.reader.readexactly(n)
        return bool(b0 & 0x80), b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(masked))


class RawServer:
    """Answers the upgrade by hand (or with ``response`` verbatim), then hands each peer to the test."""

    def __init__(self, response: bytes | None = None) -> None:
        self.response = response
        self.peers: asyncio.Queue[RawPeer] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/media"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        if self.response is not None:
            writer.write(self.response)
        else:
            accept = accept_for(request)
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
        await self.peers.put(RawPeer(request, reader, writer))


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[int, bytes]] = []

    def __call__(self, opcode: int, payload: bytes) -> None:
        self.messages.append((opcode, payload))


async def _connected(server: RawServer) -> tuple[ClientWebSocket, RawPeer, Inbox]:
    sock = await asyncio.wait_for(ClientWebSocket.connect(server.url, {"X-Twilio-Signature": "sig"}), 5)
    peer = await asyncio.wait_for(server.peers.get(), 5)
    inbox = Inbox()
    sock.start(inbox)
    return sock, peer, inbox


async def _until(predicate: Callable[[], object]) -> None:
    """Polls ``predicate`` for up to 5 s (the socket has no event for "the peer processed it")."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met within 5 s")


async def test_upgrade_request_and_every_frame_masked_with_its_own_key() -> None:
    async with RawServer() as server:
        sock, peer, inbox = await _connected(server)
        head = peer.request.decode()
        assert head.startswith("GET /media HTTP/1.1\r\n")
        for line in (
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "X-Twilio-Signature: sig",
        ):
            assert line in head
        assert f"Host: {urlsplit(server.url).netloc}\r\n" in head
        for i in range(5):
            assert sock.send_text(f'{{"n":{i}}}'.encode() + b"x" * (i * 100))
        peer.send(server_frame(OP_PING, b"are you there"))
        for i in range(5):
            assert await peer.frame() == (True, OP_TEXT, f'{{"n":{i}}}'.encode() + b"x" * (i * 100))
        assert await peer.frame() == (True, OP_PONG, b"are you there")
        await asyncio.gather(sock.close(4000, "done"), _reply_close(peer))
        assert len(set(peer.keys)) == len(peer.keys) == 7  # 5 texts, the pong, the close
        assert sock.close_code == 4000 and sock.closed and inbox.messages == []


async def _reply_close(peer: RawPeer) -> None:
    fin, opcode, payload = await peer.frame()
    assert (fin, opcode, payload) == (True, OP_CLOSE, struct.pack("!H", 4000) + b"done")
    peer.send(server_frame(OP_CLOSE, payload))
    peer.writer.close()  # the server drops TCP first


async def test_fragments_reassembled_around_an_interleaved_ping_and_long_lengths() -> None:
    async with RawServer() as server:
        sock, peer, inbox = await _connected(server)
        big = b"y" * 70_000  # 64-bit length
        peer.send(
            server_frame(OP_TEXT, b"hel", fin=False)
            + server_frame(OP_PING, b"p")
            + server_frame(OP_CONT, b"lo", fin=False)
            + server_frame(OP_CONT, b" world")
            + server_frame(OP_BINARY, b"\x00\x01")
            + server_frame(OP_TEXT, b"z" * 300)  # 16-bit length
        )
        # Byte by byte, as a slow network would deliver it.
        for b in server_frame(OP_TEXT, big):
            peer.send(bytes([b]))
            if b % 7 == 0:
                await peer.writer.drain()
        await _until(lambda: len(inbox.messages) == 4)
        assert inbox.messages == [
            (OP_TEXT, b"hello world"),
            (OP_BINARY, b"\x00\x01"),
            (OP_TEXT, b"z" * 300),
            (OP_TEXT, big),
        ]
        assert await peer.frame() == (True, OP_PONG, b"p")
        peer.send(server_frame(OP_CLOSE, struct.pack("!H", 4401) + b"stream token forged"))
        assert await peer.frame() == (True, OP_CLOSE, struct.pack("!H", 4401))  # the code is echoed
        await sock.wait_closed()
        closing = asyncio.create_task(sock.close())
        with pytest.raises(TimeoutError):  # the client leaves dropping TCP to the server
            await asyncio.wait_for(peer.reader.read(1), 0.1)
        assert not closing.done()
        peer.writer.close()
        await asyncio.wait_for(closing, 5)
        assert (sock.close_code, sock.close_reason, sock.protocol_error) == (
            4401,
            "stream token forged",
            None,
        )
        assert not sock.send_text(b"late")


async def test_several_frames_per_read_and_frames_split_across_reads() -> None:
    async with RawServer() as server:
        _, peer, inbox = await _connected(server)
        texts = [b"a" * n for n in (1, 125, 126, 300, 5)]
        wire = b"".join(server_frame(OP_TEXT, t) for t in texts)
        tail = server_frame(OP_TEXT, b"t" * 200)
        peer.send(wire + tail[:7])  # whole frames, then the start of one
        await peer.writer.drain()
        await asyncio.sleep(0.05)
        peer.send(tail[7:] + server_frame(OP_PING, b"p") + server_frame(OP_TEXT, b"end"))
        await _until(lambda: len(inbox.messages) == 7)
        assert inbox.messages == [(OP_TEXT, t) for t in [*texts, b"t" * 200, b"end"]]
        assert await peer.frame() == (True, OP_PONG, b"p")
        peer.writer.close()


@pytest.mark.parametrize(
    "frame,code,reason",
    [
        (server_frame(OP_TEXT, b"x", mask=b"abcd"), 1002, "must not be masked"),
        (server_frame(OP_TEXT, b"x", rsv=0x40), 1002, "reserved bits"),
        (server_frame(0x3, b"x"), 1002, "unknown opcode"),
        (server_frame(OP_PING, b"p" * 126), 1002, "longer than 125"),
        (server_frame(OP_PING, b"p", fin=False), 1002, "fragmented control"),
        (server_frame(OP_CONT, b"x"), 1002, "no message to continue"),
        (server_frame(OP_TEXT, b"a", fin=False) + server_frame(OP_TEXT, b"b"), 1002, "inside a fragmented"),
        (server_frame(OP_CLOSE, struct.pack("!H", 1005)), 1002, "may not be sent"),
        (server_frame(OP_CLOSE, b"\x03"), 1002, "1-byte body"),
        (server_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007, "not UTF-8"),
        (server_frame(OP_TEXT, b"x" * 2000), 1009, "larger than"),
        # 16-bit length 248 with the mask bit: byte 1 is 0xFE, so 2 + 254 = 256 = the frame's size
        (server_frame(OP_TEXT, b"x" * 248, mask=b"abcd"), 1002, "must not be masked"),
    ],
)
async def test_protocol_errors_fail_the_connection(
    frame: bytes, code: int, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wsmod, "MAX_MESSAGE_BYTES", 1000)
    async with RawServer() as server:
        sock = await asyncio.wait_for(ClientWebSocket.connect(server.url, max_message_bytes=1000), 5)
        peer = await server.peers.get()
        sock.start(Inbox())
        peer.send(frame)
        _, opcode, payload = await asyncio.wait_for(peer.frame(), 5)
        assert (opcode, struct.unpack("!H", payload[:2])[0]) == (OP_CLOSE, code)
        await asyncio.wait_for(sock.wait_closed(), 5)
        assert sock.protocol_error is not None and reason in sock.protocol_error.reason
        assert sock.close_code == code
        assert await peer.reader.read() == b""  # and TCP is dropped


async def test_messages_in_the_same_segment_as_the_101_wait_for_start() -> None:
    hello = server_frame(OP_TEXT, b"early") + server_frame(OP_CLOSE, struct.pack("!H", 1000))
    async with RawServer() as server:

        async def accept_with_early_frames(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            accept = accept_for(request)
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\n"
                b"connection: keep-alive, upgrade\r\n"
                b"sec-websocket-accept: " + accept + b"\r\n\r\n" + hello
            )
            await writer.drain()
            writer.close()

        assert server.server is not None
        server.server.close()
        server.server = await asyncio.start_server(accept_with_early_frames, "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{server.server.sockets[0].getsockname()[1]}/m"
        sock = await asyncio.wait_for(ClientWebSocket.connect(url), 5)
        await asyncio.sleep(0.05)  # the server is gone by now
        inbox = Inbox()
        sock.start(inbox)
        await asyncio.wait_for(sock.wait_closed(), 5)
        assert inbox.messages == [(OP_TEXT, b"early")] and sock.close_code == 1000


@pytest.mark.parametrize(
    "response,match",
    [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "HTTP 403 Forbidden"),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
            "Sec-WebSocket-Accept",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "Upgrade: websocket"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP response"),
    ],
)
async def test_refused_or_wrong_upgrades(response: bytes, match: str) -> None:
    async with RawServer(response) as server:
        with pytest.raises(HandshakeError, match=match):
            await asyncio.wait_for(ClientWebSocket.connect(server.url), 5)


async def test_negotiated_extension_is_refused() -> None:
    class Greedy(RawServer):
        async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            accept = accept_for(request)
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Accept: "
                + accept
                + b"\r\n\r\n"
            )

    async with Greedy() as server:
        with pytest.raises(HandshakeError, match="never offered"):
            await asyncio.wait_for(ClientWebSocket.connect(server.url), 5)


async def test_close_without_an_answer_times_out_as_abnormal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsmod, "CLOSE_TIMEOUT_S", 0.1)
    async with RawServer() as server:
        sock, peer, _ = await _connected(server)
        await sock.close()
        assert (await peer.frame())[1] == OP_CLOSE
        assert sock.close_code == 1006 and await peer.reader.read() == b""


async def test_a_server_that_stops_reading_gets_sends_refused_not_buffered_for_ever() -> None:
    async with RawServer() as server:
        sock, peer, _ = await _connected(server)
        chunk = b"x" * 65_000
        sent = 0
        for _ in range(2000):  # the kernel's buffers fill first, then the transport's 256 KiB
            if not sock.send_text(chunk):
                break
            sent += 1
            await asyncio.sleep(0)
        assert 0 < sent < 2000
        assert (await peer.frame())[2] == chunk  # reading resumes: the queued frames are intact
        peer.writer.close()


async def test_tcp_drop_is_abnormal_closure() -> None:
    async with RawServer() as server:
        sock, peer, _ = await _connected(server)
        peer.writer.close()
        await asyncio.wait_for(sock.wait_closed(), 5)
        assert sock.close_code == 1006 and sock.protocol_error is None


@pytest.fixture
async def aiohttp_echo() -> AsyncIterator[tuple[str, list[object]]]:
    """aiohttp's server: echoes text, pings once, closes with 4001 on "bye"; records what it saw."""
    seen: list[object] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        seen.append(request.headers.get("X-Test"))
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.ping(b"hb")
        async for msg in ws:
            seen.append((msg.type, msg.data))
            if msg.type is WSMsgType.TEXT:
                if msg.data == "bye":
                    await ws.close(code=4001, message=b"over")
                else:
                    await ws.send_str(msg.data.upper())
        seen.append(("server close_code", ws.close_code))
        return ws

    app = web.Application()
    app.router.add_get("/media", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"ws://127.0.0.1:{runner.addresses[0][1]}/media", seen
    finally:
        await runner.cleanup()


async def test_against_aiohttp_server(aiohttp_echo: tuple[str, list[object]]) -> None:
    url, seen = aiohttp_echo
    sock = await asyncio.wait_for(ClientWebSocket.connect(url, {"X-Test": "yes"}), 5)
    inbox = Inbox()
    sock.start(inbox)
    assert sock.send_text("héllo".encode())
    await _until(lambda: inbox.messages)
    assert inbox.messages == [(OP_TEXT, "HÉLLO".encode())]
    assert sock.send_text(b"bye")
    await asyncio.wait_for(sock.wait_closed(), 5)
    await sock.close()
    assert (sock.close_code, sock.close_reason) == (4001, "over")
    await _until(lambda: seen[-1] == ("server close_code", 4001))
    assert seen[:3] == ["yes", (WSMsgType.PONG, b"hb"), (WSMsgType.TEXT, "héllo")]


async def test_client_initiated_close_against_aiohttp(aiohttp_echo: tuple[str, list[object]]) -> None:
    url, seen = aiohttp_echo
    sock = await asyncio.wait_for(ClientWebSocket.connect(url), 5)
    sock.start(Inbox())
    await asyncio.wait_for(sock.close(), 5)
    assert sock.close_code == 1000  # aiohttp answers our close with 1000
    await _until(lambda: seen[-1] == ("server close_code", 1000))


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_wss(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data + "!")
        return ws

    app = web.Application()
    app.router.add_get("/media", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls).start()
    url = f"wss://127.0.0.1:{runner.addresses[0][1]}/media"
    try:
        with pytest.raises(ssl.SSLCertVerificationError):  # verified by default, like aiohttp
            await asyncio.wait_for(ClientWebSocket.connect(url), 5)
        sock = await asyncio.wait_for(
            ClientWebSocket.connect(url, ssl_context=ssl.create_default_context(cafile=cert)), 5
        )
        inbox = Inbox()
        sock.start(inbox)
        sock.send_text(b"secure")
        await _until(lambda: inbox.messages)
        assert inbox.messages == [(OP_TEXT, b"secure!")]
        await asyncio.wait_for(sock.close(), 5)
        assert sock.close_code == 1000
    finally:
        await runner.cleanup()


def test_parser_refuses_oversized_frames_from_the_header() -> None:
    parser = FrameParser(max_message_bytes=100)
    assert parser.feed(struct.pack("!BBQ", 0x81, 127, 1 << 40)) == []  # no payload buffered, none needed
    assert parser.error is not None and "larger than 100" in parser.error.reason
    parser = FrameParser(max_message_bytes=100)
    assert parser.feed(server_frame(OP_TEXT, b"a" * 60, fin=False)) == []
    assert parser.feed(server_frame(OP_CONT, b"b" * 60)) == []
    assert parser.error is not None and parser.error.close_code == 1009


def test_parser_returns_what_came_before_a_broken_frame_then_stops() -> None:
    parser = FrameParser()
    broken = server_frame(OP_TEXT, b"x", mask=b"abcd")
    assert parser.feed(server_frame(OP_TEXT, b"ok") + broken + server_frame(OP_TEXT, b"after")) == [
        (OP_TEXT, b"ok")
    ]
    assert isinstance(parser.error, FrameError) and parser.error.close_code == 1002
    assert parser.feed(server_frame(OP_TEXT, b"more")) == []


def test_url_checks() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        asyncio.run(ClientWebSocket.connect("http://127.0.0.1/media"))
    assert wsmod.upgrade_request("wss://[::1]:443/a?b=1", "k", {}).startswith(
        b"GET /a?b=1 HTTP/1.1\r\nHost: [::1]\r\n"
    )
