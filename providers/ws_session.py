"""The live-session shell shared by WebSocket provider adapters: per-message delivery and close.

Every parsed provider message is decoded as it arrives and its events handed to the call session
in order; caller audio goes straight to the socket; closing from any task keeps the "who ended
it" distinction that failover depends on. Compiled with mypyc (setup.py): each agent frame of a
relayed call runs through it. Connecting is ``providers/ws_adapter.py``.
"""

from __future__ import annotations

import contextlib
import logging
from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Final

from mypy_extensions import mypyc_attr

from providers.base import Audio, AudioOut, ProviderEvent, ProviderSession
from providers.event_feed import EventFeed
from providers.ws_client import ProviderSocket
from providers.ws_frames import OP_BINARY

logger = logging.getLogger(__name__)

BACKLOG_PAUSE: Final = 200  # events waiting for the pump before the socket stops reading (~4 s of audio)
BACKLOG_RESUME: Final = 50


@mypyc_attr(allow_interpreted_subclasses=True)  # adapters not compiled extend it too
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
        self._feed = EventFeed(self, ws.resume_reading, BACKLOG_RESUME)
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

    def events(self) -> AsyncIterator[ProviderEvent]:
        """Starts reading the socket; the feed resumes it once the pump has caught up."""
        self._ws.start(self._on_message, self._on_socket_closed)
        return self._feed.events()

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            self._goodbye()
        await self._ws.close()
        self._feed.end()


@mypyc_attr(allow_interpreted_subclasses=True)
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
