"""The I/O shell shared by WebSocket provider adapters: connect deadline, error classes, one reader.

Adapters keep their wire format in a sans-I/O ``protocol`` module; what is left is the same for
every WebSocket provider: map HTTP statuses and socket failures to ``ErrorKind``s so the router
reacts correctly, read the socket from exactly one task (``events()``), and close promptly from
any task without losing the "who ended it" distinction that failover depends on.
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

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 1.0  # close() must be prompt even when the provider never answers the close frame
MAX_MSG_SIZE = 16 * 1024 * 1024


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
    except aiohttp.WSServerHandshakeError as exc:
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


async def open_ws(
    http: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(
        url,
        headers=headers,
        autoping=True,
        heartbeat=None,
        max_msg_size=MAX_MSG_SIZE,
        timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
    )


async def await_ready(
    ws: aiohttp.ClientWebSocketResponse,
    provider: str,
    ready: str,
    refusal: Callable[[dict[str, Any]], ProviderError | None],
) -> None:
    """Read handshake replies until the JSON message of type ``ready``; ``refusal`` turns a message
    that says no into the error to raise. A close first is ``PROVIDER_DOWN``."""
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            continue
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ProviderError(ErrorKind.PROVIDER_DOWN, f"{provider}: closed {ws.close_code} before {ready}")
        try:
            message = orjson.loads(msg.data)
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
    """A provider session over one WebSocket; subclasses decode messages and classify the end."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__()
        self._ws = ws
        self._closing = False

    # -- subclass hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        """Events for one binary frame."""

    @abstractmethod
    async def _on_text(self, text: str) -> Sequence[ProviderEvent]:
        """Events for one text frame (may send replies, e.g. tool results)."""

    @abstractmethod
    def _on_end(self, code: int | None, reason: str) -> ProviderEvent | None:
        """The provider closed the socket: ``Hangup`` for its normal end, else ``Failure``
        (None when a message already announced the end)."""

    async def _goodbye(self) -> None:
        """What the protocol says before we close (e.g. an end-call message)."""

    # -- shared shell ------------------------------------------------------------------------------
    async def _send_str(self, text: str) -> None:
        """Send unless closing; a dead socket is reported by ``events()``, not by the sender."""
        if self._ws.closed:
            return
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await self._ws.send_str(text)

    async def _send_replies(self, outbox: list[str] | list[bytes]) -> None:
        """Send what a codec queued while decoding (in order), emptying its queue."""
        replies = outbox[:]
        outbox.clear()
        for reply in replies:
            await self._send_str(reply if isinstance(reply, str) else reply.decode())

    async def _send_bytes(self, data: bytes) -> None:
        if self._ws.closed:
            return
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await self._ws.send_bytes(data)

    async def events(self) -> AsyncIterator[ProviderEvent]:
        ws = self._ws
        reason = ""
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is aiohttp.WSMsgType.BINARY:
                for event in self._on_binary(msg.data):
                    yield event
            elif kind is aiohttp.WSMsgType.TEXT:
                for event in await self._on_text(msg.data):
                    yield event
            else:
                if kind is aiohttp.WSMsgType.CLOSE:
                    reason = str(msg.extra or "")
                elif kind is aiohttp.WSMsgType.ERROR:
                    reason = f"socket error: {ws.exception()!r}"
                break
        if self._closing:
            return
        with contextlib.suppress(Exception):
            await ws.close()
        final = self._on_end(ws.close_code, reason)
        if final is not None:
            yield final

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._goodbye()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._ws.close()


class RawAudioWsSession(WsProviderSession):
    """A session whose audio is bare binary frames both ways, already in the negotiated formats
    (Retell, Vapi): only text frames need a protocol decoder."""

    async def send_audio(self, audio: Audio) -> None:
        self.usage.audio_in_ms += audio.duration_ms
        await self._send_bytes(audio.raw)

    def _on_binary(self, data: bytes) -> Sequence[ProviderEvent]:
        audio = Audio(self.output_format, raw=data)
        self.usage.audio_out_ms += audio.duration_ms
        return (AudioOut(audio),)
