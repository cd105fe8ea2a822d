"""How WebSocket provider adapters connect: one deadline, error classes, handshake replies.

Adapters keep their wire format in a sans-I/O ``protocol`` module; what is left at connect time is
the same for every WebSocket provider: map HTTP statuses and socket failures to ``ErrorKind``s so
the router reacts correctly, and wait for the provider's "ready" message. The live session's
shell is ``providers/ws_session.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import orjson

from providers.base import ErrorKind, ProviderError
from providers.ws_client import HandshakeError, ProviderSocket
from providers.ws_frames import OP_BINARY, OP_TEXT

logger = logging.getLogger(__name__)


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
