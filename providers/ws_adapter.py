"""The I/O shell shared by WebSocket provider adapters: connect deadline, error classes, delivery.

Adapters keep their wire format in a sans-I/O ``protocol`` module; what is left is the same for
every WebSocket provider: map HTTP statuses and socket failures to ``ErrorKind``s so the router
reacts correctly, decode each message as the socket parses it and hand its events to the
session in order (``events()``), and close promptly from any task without losing the "who ended
it" distinction that failover depends on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from providers.base import Audio, AudioOut, ErrorKind, ProviderError, ProviderEvent, ProviderSession
from providers.event_feed import EventFeed
from providers.ws_client import HandshakeError, ProviderSocket
from providers.ws_frames import OP_BINARY, OP_TEXT

logger = logging.getLogger(__name__)

BACKLOG_PAUSE = 200  # events waiting for the pump before the socket stops reading (~4 s of audio)
BACKLOG_RESUME = 50


def kind_for_status(status: int) -> ErrorKind:
    """HTTP status of a REST call or WebSocket upgrade → how the router should react."""
    if status in (401, 403):
        return ErrorKind.AUTH
    if status in (402, 429):
        return ErrorKind.QUOTA
    if status == 408:
        return ErrorKind.TIMEOUT
    if 400 <= status < 500:
        return ErrorKind.CONFIG
    return ErrorKind.PROVIDER_DOWN


def ws_url_from_http(base: str) -> str:
    """``http://host:port`` → ``ws://host:port`` (and https → wss); ws URLs pass through."""
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


@contextlib.asynccontextmanager
async def connect_deadline(provider: str, deadline_s: float) -> AsyncIterator[None]:
    """One deadline over REST + upgrade + handshake reply; every failure becomes a ``ProviderError``."""
    try:
        async with asyncio.timeout(deadline_s):
            yield
    except ProviderError as exc:
        logger.warning("%s connect failed: %s", provider, exc)
        raise
    except TimeoutError:
        logger.warning("%s connect timed out after %.1fs", provider, deadline_s)
        raise ProviderError(ErrorKind.TIMEOUT, f"{provider}: no answer within {deadline_s:.1f}s") from None
    except HandshakeError as exc:
        kind = kind_for_status(exc.status)
        logger.warning("%s refused the WebSocket upgrade: HTTP %s", provider, exc.status)
        raise ProviderError(kind, f"{provider}: WebSocket upgrade refused with HTTP {exc.status}") from None
    except (aiohttp.ClientError, OSError) as exc:
        logger.warning("%s unreachable: %s", provider, type(exc).__name__)
        raise ProviderError(ErrorKind.PROVIDER_DOWN, f"{provider}: {type(exc).__name__}: {exc}") from None


async def post_json(
    http: aiohttp.ClientSession, provider: str, url: str, body: Mapping[str, Any], headers: Mapping[str, str]
) -> dict[str, Any]:
    """POST a JSON body; non-2xx answers raise a classified ``ProviderError`` quoting the reply."""
    async with http.post(
        url, data=orjson.dumps(body), headers={**headers, "Content-Type": "application/json"}
    ) as resp:
        raw = await resp.read()
        if resp.status >= 300:
            detail = raw[:300].decode("utf-8", "replace")
            raise ProviderError(kind_for_status(resp.status), f"{provider}: HTTP {resp.status}: {detail}")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProviderError(ErrorKind.PROVIDER_DOWN, f"{provider}: reply is not JSON") from None
    if not isinstance(parsed, dict):
        raise ProviderError(ErrorKind.PROVIDER_DOWN, f"{provider}: reply is not a JSON object")
    return parsed


async def open_ws(url: str, headers: Mapping[str, str] | None = None) -> ProviderSocket:
    return await ProviderSocket.connect(url, headers)


async def await_ready(
    ws: ProviderSocket,
    provider: str,
    ready: str,
    refusal: Callable[[dict[str, Any]], ProviderError | None],
) -> None:
    """Read handshake replies until the JSON message of type ``ready``; ``refusal`` turns a message
    that says no into the error to raise. A close first is ``PROVIDER_DOWN``."""
    while True:
        opcode, data = await ws.receive()
        if opcode == OP_BINARY:
            continue
        if opcode != OP_TEXT:
            raise ProviderError(ErrorKind.PROVIDER_DOWN, f"{provider}: closed {ws.close_code} before {ready}")
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(message, dict):
            continue
        if message.get("type") == ready:
            return
        error = refusal(message)
        if error is not None:
            raise error


class WsProviderSession(ProviderSession):
    """A provider session over one WebSocket; subclasses decode messages and classify the end.

    Every parsed message is decoded as it arrives (``_on_text``/``_on_binary`` are synchronous;
    replies such as tool results are sent at once) and its events go through an ``EventFeed``:
    agent audio reaches the carrier without a task switch while the session's pump is idle.
    Caller audio is written straight to the socket (``send_audio_nowait``).
    """

    def __init__(self, ws: ProviderSocket) -> None:
        super().__init__()
        self._ws = ws
        self._closing = False
        self._feed = EventFeed(self)
        self.messages_failed = 0

    # -- subclass hooks ----------------------------------------------------------------------------
    @abstractmethod
    def send_audio_nowait(self, audio: Audio) -> bool:
        """Encode and write one caller frame (``_send_audio``); always True: nothing to await."""

    @abstractmethod
    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        """Events for one binary frame."""

    @abstractmethod
    def _on_text(self, text: bytes) -> Sequence[ProviderEvent]:
        """Events for one text frame (UTF-8 bytes); may send replies, e.g. tool results."""

    @abstractmethod
    def _on_end(self, code: int | None, reason: str) -> ProviderEvent | None:
        """The provider closed the socket: ``Hangup`` for its normal end, else ``Failure``
        (None when a message already announced the end)."""

    def _goodbye(self) -> None:
        """What the protocol says before we close (e.g. an end-call message)."""

    # -- shared shell ------------------------------------------------------------------------------
    async def send_audio(self, audio: Audio) -> None:
        self.send_audio_nowait(audio)

    def _send_audio(self, message: str | bytes) -> None:
        """One caller audio message (text); dropped and counted when the provider stopped reading."""
        if not self._ws.send_text(message, droppable=True) and not self._ws.closed:
            self.frames_dropped += 1

    def _send_audio_binary(self, data: bytes) -> None:
        if not self._ws.send_binary(data, droppable=True) and not self._ws.closed:
            self.frames_dropped += 1

    def _send_str(self, text: str | bytes) -> None:
        """A control message; a dead socket is reported by ``events()``, not by the sender."""
        self._ws.send_text(text)

    def _send_replies(self, outbox: list[str] | list[bytes]) -> None:
        """Send what a codec queued while decoding (in order), emptying its queue."""
        for reply in outbox:
            self._ws.send_text(reply)
        outbox.clear()

    def _on_message(self, opcode: int, data: bytes) -> None:
        """Runs inside the socket's ``data_received``: an exception escaping it would make the
        event loop close the provider connection, so a message that cannot be handled is
        skipped (logged once per session, counted) and the call goes on."""
        try:
            events = self._on_binary(data) if opcode == OP_BINARY else self._on_text(data)
            feed = self._feed
            for event in events:
                if feed.push(event) >= BACKLOG_PAUSE:
                    self._ws.pause_reading()
        except Exception:
            self.messages_failed += 1
            if self.messages_failed == 1:
                logger.exception("%s: a provider message could not be handled; skipped", self.name)

    def _on_socket_closed(self) -> None:
        if not self._closing:
            ws = self._ws
            final = self._on_end(ws.close_code, ws.close_reason)
            if final is not None:
                self._feed.push(final)
        self._feed.end()

    async def events(self) -> AsyncIterator[ProviderEvent]:
        ws = self._ws
        ws.start(self._on_message, self._on_socket_closed)
        feed = self._feed
        async for event in feed.events():
            yield event
            if len(feed) < BACKLOG_RESUME:
                ws.resume_reading()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            self._goodbye()
        await self._ws.close()
        self._feed.end()


class RawAudioWsSession(WsProviderSession):
    """A session whose audio is bare binary frames both ways, already in the negotiated formats
    (Retell, Vapi): only text frames need a protocol decoder."""

    def send_audio_nowait(self, audio: Audio) -> bool:
        self.usage.audio_in_ms += audio.duration_ms
        self._send_audio_binary(audio.raw)
        return True

    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        audio = Audio(self.output_format, raw=data)
        self.usage.audio_out_ms += audio.duration_ms
        return (AudioOut(audio),)
