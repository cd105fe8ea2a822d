"""ProviderSocket against the websockets library's server (a separate RFC 6455 implementation) and
against raw TCP servers that misbehave on purpose: handshake, early frames, ping, fragments, both
close directions, size limit, TLS, and a provider that stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve
from websockets.utils import accept_key

from providers import ws_client
from providers.base import MULAW_8000, Audio, AudioOut, Notice, ProviderEvent
from providers.ws_client import HandshakeError, ProviderSocket
from providers.ws_frames import OP_BINARY, OP_CLOSE, OP_TEXT, FrameParser, encode_frame
from providers.ws_session import WsProviderSession

Handler = Callable[[ServerConnection], Awaitable[None]]


async def _echo(conn: ServerConnection) -> None:
    async for message in conn:
        if message == "close-me":
            await conn.close(4401, "stream token forged")
            return
        if message == "ping-me":
            await conn.ping(b"are you there")
            await conn.send("pinged")
            continue
        if message == "fragments":
            await conn.send(["frag", "ment", "ed"])
            continue
        await conn.send(message)


@contextlib.asynccontextmanager
async def _serve(handler: Handler, **kwargs: object) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:  # type: ignore[arg-type]
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"127.0.0.1:{port}"


@pytest.fixture
async def echo_host() -> AsyncIterator[str]:
    async with _serve(_echo, max_size=2**20) as host:
        yield host


class Inbox:
    """Collects what a started socket delivers."""

    def __init__(self, sock: ProviderSocket) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.closed = asyncio.Event()
        self._arrived = asyncio.Event()
        sock.start(self._on_message, self.closed.set)

    def _on_message(self, opcode: int, payload: bytes) -> None:
        self.messages.append((opcode, payload))
        self._arrived.set()

    async def next(self) -> tuple[int, bytes]:
        while not self.messages:
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), 2)
        return self.messages.pop(0)


async def test_text_binary_fragments_and_headers(echo_host: str) -> None:
    seen: list[str | None] = []

    async def handler(conn: ServerConnection) -> None:
        assert conn.request is not None
        seen.append(conn.request.headers.get("Authorization"))
        seen.append(conn.request.path)
        await _echo(conn)

    async with _serve(handler) as host:
        url = f"ws://{host}/v1/agent?model=a%2Fb&x=1"
        sock = await ProviderSocket.connect(url, {"Authorization": "Token k"})
        inbox = Inbox(sock)
        assert sock.send_text("hello") and sock.send_binary(b"\x00\xff" * 100)
        assert await inbox.next() == (OP_TEXT, b"hello")
        assert await inbox.next() == (OP_BINARY, b"\x00\xff" * 100)
        sock.send_text("fragments")
        assert await inbox.next() == (OP_TEXT, b"fragmented")  # reassembled
        sock.send_text("x" * 70_000)  # 64-bit length form, masked by us, unmasked by the server
        assert await inbox.next() == (OP_TEXT, b"x" * 70_000)
        await sock.close()
        assert sock.closed and sock.close_code == 1000
    assert seen == ["Token k", "/v1/agent?model=a%2Fb&x=1"]  # the query goes out exactly as given


async def test_receive_before_start_then_callbacks_in_order(echo_host: str) -> None:
    sock = await ProviderSocket.connect(f"ws://{echo_host}/")
    for i in range(3):
        sock.send_text(f"m{i}")
    assert await asyncio.wait_for(sock.receive(), 2) == (OP_TEXT, b"m0")
    await asyncio.sleep(0.1)  # m1 and m2 arrive before start(): kept, then delivered first
    inbox = Inbox(sock)
    sock.send_text("m3")
    assert [await inbox.next() for _ in range(3)] == [(OP_TEXT, b"m1"), (OP_TEXT, b"m2"), (OP_TEXT, b"m3")]
    with pytest.raises(RuntimeError):
        await sock.receive()
    await sock.close()


async def test_ping_is_answered(echo_host: str) -> None:
    sock = await ProviderSocket.connect(f"ws://{echo_host}/")
    inbox = Inbox(sock)
    sock.send_text("ping-me")
    assert await inbox.next() == (OP_TEXT, b"pinged")
    sock.send_text("after")  # the server's keepalive saw our pong: the connection is still up
    assert await inbox.next() == (OP_TEXT, b"after")
    await sock.close()


async def test_server_close_reports_code_and_reason(echo_host: str) -> None:
    sock = await ProviderSocket.connect(f"ws://{echo_host}/")
    inbox = Inbox(sock)
    sock.send_text("close-me")
    await asyncio.wait_for(inbox.closed.wait(), 2)
    assert (sock.close_code, sock.close_reason) == (4401, "stream token forged")
    assert not sock.send_text("too late")
    assert sock.close_code == 4401


async def test_close_before_start_ends_receive(echo_host: str) -> None:
    sock = await ProviderSocket.connect(f"ws://{echo_host}/")
    sock.send_text("close-me")
    assert await asyncio.wait_for(sock.receive(), 2) == (OP_CLOSE, b"")
    assert sock.close_code == 4401
    inbox = Inbox(sock)  # start() after the close still reports it
    assert inbox.closed.is_set()


async def test_message_over_the_limit_closes_with_1009() -> None:
    async def big(conn: ServerConnection) -> None:
        await conn.send("y" * 5000)
        await asyncio.sleep(1)

    async with _serve(big) as host:
        sock = await ProviderSocket.connect(f"ws://{host}/", max_message_bytes=1000)
        inbox = Inbox(sock)
        await asyncio.wait_for(inbox.closed.wait(), 2)
        assert sock.close_code == 1009 and not inbox.messages


@pytest.mark.parametrize(
    ("status_line", "status"),
    [
        (b"HTTP/1.1 401 Unauthorized", 401),
        (b"HTTP/1.1 429 Too Many Requests", 429),
        (b"HTTP/1.1 503 Busy", 503),
    ],
)
async def test_refused_upgrade_carries_the_status(status_line: bytes, status: int) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(status_line + b"\r\nContent-Length: 2\r\n\r\nno")
        await writer.drain()
        writer.close()

    async with raw_server(refuse) as host:
        with pytest.raises(HandshakeError) as err:
            await ProviderSocket.connect(f"ws://{host}/")
        assert err.value.status == status


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda key: b"Upgrade: websocket\r\nSec-WebSocket-Accept: AAAA\r\n", "Sec-WebSocket-Accept"),
        (lambda key: b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n", "Upgrade"),
        (
            lambda key: (
                b"Upgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"
                + b"Sec-WebSocket-Accept: "
                + accept_key(key).encode()
                + b"\r\n"
            ),
            "extension",
        ),
    ],
)
async def test_invalid_101_is_refused(answer: Callable[[str], bytes], message: str) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = _key(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n" + answer(key) + b"\r\n")
        await asyncio.sleep(1)

    async with raw_server(bad) as host:
        with pytest.raises(HandshakeError, match=message) as err:
            await ProviderSocket.connect(f"ws://{host}/")
        assert err.value.status == 101


async def test_frames_in_the_same_segment_as_the_101_are_kept() -> None:
    async def eager(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = _key(await reader.readuntil(b"\r\n\r\n"))
        welcome = encode_frame(OP_TEXT, b'{"type":"Welcome"}')
        writer.write(_accept(key) + welcome + encode_frame(OP_BINARY, b"\x01"))
        await asyncio.sleep(1)

    async with raw_server(eager) as host:
        sock = await ProviderSocket.connect(f"ws://{host}/")
        assert await asyncio.wait_for(sock.receive(), 2) == (OP_TEXT, b'{"type":"Welcome"}')
        assert await asyncio.wait_for(sock.receive(), 2) == (OP_BINARY, b"\x01")
        sock.abort()


async def test_masked_frame_from_the_server_is_a_protocol_error() -> None:
    async def masked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = _key(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_accept(key) + encode_frame(OP_TEXT, b"ok") + encode_frame(OP_TEXT, b"bad", mask=True))
        got = await reader.read(100)  # our close frame: 1002
        received.extend(FrameParser(from_client=True, max_message_bytes=1000).feed(got))

    received: list[tuple[int, bytes]] = []
    async with raw_server(masked) as host:
        sock = await ProviderSocket.connect(f"ws://{host}/")
        inbox = Inbox(sock)
        await asyncio.wait_for(inbox.closed.wait(), 2)
        assert inbox.messages == [(OP_TEXT, b"ok")]  # what came before the broken frame is kept
        assert sock.close_code == 1002 and "masked" in sock.close_reason
        await asyncio.sleep(0.1)
    assert received and received[0][0] == OP_CLOSE and received[0][1][:2] == b"\x03\xea"


async def test_close_is_prompt_when_the_server_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ws_client, "CLOSE_TIMEOUT_S", 0.2)

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = _key(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_accept(key))
        await asyncio.sleep(2)

    async with raw_server(deaf) as host:
        sock = await ProviderSocket.connect(f"ws://{host}/")
        started = time.monotonic()
        await sock.close()
        assert time.monotonic() - started < 0.5 and sock.closed


async def test_audio_is_dropped_not_buffered_when_the_server_stops_reading() -> None:
    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = _key(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_accept(key))
        await asyncio.sleep(3)  # never reads again

    async with raw_server(stalled) as host:
        sock = await ProviderSocket.connect(f"ws://{host}/")
        frame = b"\xff" * 8000  # 1 s of mu-law per message
        sent = 0
        for _ in range(5000):  # 40 MB offered: far beyond the kernel's buffers and our cap
            if not sock.send_binary(frame, droppable=True):
                break
            sent += 1
            if sent % 20 == 0:
                await asyncio.sleep(0)
        assert sent < 5000, "audio must be dropped once MAX_UNSENT_BYTES wait"
        assert sock.send_text('{"type":"KeepAlive"}')  # control messages still go out
        sock.abort()


async def test_server_gone_is_reported() -> None:
    async def vanish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = _key(await reader.readuntil(b"\r\n\r\n"))
        writer.write(_accept(key))
        await writer.drain()
        writer.transport.abort()

    async with raw_server(vanish) as host:
        sock = await ProviderSocket.connect(f"ws://{host}/")
        inbox = Inbox(sock)
        await asyncio.wait_for(inbox.closed.wait(), 2)
        assert sock.close_code == 1006


async def test_unreachable_and_closed_during_upgrade() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with raw_server(hang_up) as host:
        with pytest.raises(ConnectionError):
            await ProviderSocket.connect(f"ws://{host}/")
        port = int(host.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        await ProviderSocket.connect(f"ws://127.0.0.1:{port}/")  # nothing listens there any more


async def test_wss_verifies_the_server(tmp_path: Path) -> None:
    server_tls, client_tls = _tls_pair(tmp_path)
    async with _serve(_echo, ssl=server_tls) as host:
        url = f"wss://localhost:{host.rsplit(':', 1)[1]}/"
        sock = await ProviderSocket.connect(url, tls=client_tls)
        inbox = Inbox(sock)
        sock.send_text("over tls")
        assert await inbox.next() == (OP_TEXT, b"over tls")
        await sock.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            await ProviderSocket.connect(url)  # the system's CA store does not know our test CA


def test_under_uvloop_as_the_gateway_runs() -> None:
    """uvloop schedules ``connection_made`` differently from asyncio's loop: the whole exchange
    must work there too (the gateway and the bench run on uvloop)."""
    uvloop = pytest.importorskip("uvloop")

    errors: list[dict[str, object]] = []

    async def exchange() -> tuple[int, bytes]:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        async with _serve(_echo) as host:
            sock = await ProviderSocket.connect(f"ws://{host}/")
            sock.send_text("on uvloop")
            message = await asyncio.wait_for(sock.receive(), 2)
            await sock.close()
            return message

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(asyncio.wait_for(exchange(), 5)) == (OP_TEXT, b"on uvloop")
    assert not errors, errors  # e.g. an exception in a protocol callback, which the loop only logs


class _Fragile(WsProviderSession):
    """An adapter whose decoder breaks on one message."""

    name = "fragile"
    input_format = output_format = MULAW_8000

    def send_audio_nowait(self, audio: Audio) -> bool:
        self._send_audio_binary(audio.raw)
        return True

    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        return (AudioOut(Audio(MULAW_8000, raw=data)),)

    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        if text == b"boom":
            raise KeyError("a decoder bug")
        return (Notice("text", {"text": text.decode()}),)

    def _on_end(self, code: int | None, reason: str) -> ProviderEvent | None:
        return None


async def test_a_message_the_adapter_cannot_handle_is_skipped_not_fatal(
    echo_host: str, caplog: pytest.LogCaptureFixture
) -> None:
    session = _Fragile(await ProviderSocket.connect(f"ws://{echo_host}/"))
    for text in ("boom", "boom", "after"):
        session._send_str(text)
    session.send_audio_nowait(Audio(MULAW_8000, raw=b"\x7f" * 160))
    events = session.events()
    notice = await asyncio.wait_for(anext(events), 2)
    audio = await asyncio.wait_for(anext(events), 2)
    assert isinstance(notice, Notice) and notice.details == {"text": "after"}
    assert isinstance(audio, AudioOut) and audio.audio.raw == b"\x7f" * 160
    assert session.messages_failed == 2
    assert sum("could not be handled" in r.message for r in caplog.records) == 1  # logged once
    await session.close()
    assert await asyncio.wait_for(anext(events, None), 2) is None  # closing ended the events


# ---------------------------------------------------------------------------------- helpers
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class raw_server:
    """A bare TCP server running ``handler`` per connection; ``host:port`` on entry, and on exit
    its handlers (which may be waiting on purpose) are stopped."""

    def __init__(self, handler: RawHandler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await self._handler(reader, writer)
        writer.close()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _key(request: bytes) -> str:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            return value.strip().decode()
    raise AssertionError("no Sec-WebSocket-Key in the upgrade request")


def _accept(key: str) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
    )


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``localhost``: the server's context and a client that trusts it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
