"""The one small interface every voice-AI provider adapter implements.

The gateway's call session talks to providers only through this module: it hands a
``ProviderContext`` to an adapter's ``connect()``, gets a ``ProviderSession`` back, pushes caller
audio in with ``send_audio`` and reads ``ProviderEvent``s out of ``events()``. Adapters know
nothing about carriers or the database; the session knows nothing about provider wire formats.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, Protocol

import aiohttp  # at run time: the compiled build (setup.py) evaluates dataclass annotations
import pybase64
from mypy_extensions import mypyc_attr

# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------

Encoding = Literal["mulaw", "alaw", "pcm16"]
"""``pcm16`` is signed 16-bit little-endian mono; G.711 codes are one byte per sample."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An audio encoding at a sample rate (always mono)."""

    encoding: Encoding
    sample_rate: int
    ms_per_byte: float = field(init=False, repr=False, compare=False)  # hot path: one multiply per frame

    def __post_init__(self) -> None:
        object.__setattr__(self, "ms_per_byte", 1000.0 / (self.sample_rate * self.sample_width))

    @property
    def sample_width(self) -> int:
        return 2 if self.encoding == "pcm16" else 1

    @property
    def bytes_per_second(self) -> int:
        return self.sample_rate * self.sample_width

    def bytes_for_ms(self, ms: float) -> int:
        return int(self.bytes_per_second * ms / 1000) // self.sample_width * self.sample_width

    def ms_for_bytes(self, n: int) -> float:
        return n * self.ms_per_byte

    def __str__(self) -> str:
        return f"{self.encoding}/{self.sample_rate}"


MULAW_8000: Final = AudioFormat("mulaw", 8000)
ALAW_8000: Final = AudioFormat("alaw", 8000)
PCM16_8000: Final = AudioFormat("pcm16", 8000)
PCM16_16000: Final = AudioFormat("pcm16", 16000)
PCM16_24000: Final = AudioFormat("pcm16", 24000)
PCM16_48000: Final = AudioFormat("pcm16", 48000)

# Final: a C static under mypyc, where ``pybase64.b64decode`` would be a dictionary lookup and an
# attribute lookup on every call.
_b64decode: Final = pybase64.b64decode
_b64encode_as_string: Final = pybase64.b64encode_as_string


class Audio:
    """A chunk of audio that carries raw bytes, base64 text, or both.

    Carriers and most providers move audio as base64 inside JSON. When formats match, the
    gateway forwards the very same base64 string without ever decoding it; ``raw`` and ``b64``
    convert lazily and cache, so each representation is computed at most once. Both go through
    pybase64 (SIMD): ~2x faster than ``binascii`` on a 20 ms mu-law frame, 4-6x on 16/24 kHz PCM.
    """

    __slots__ = ("_b64", "_raw", "fmt")

    def __init__(self, fmt: AudioFormat, raw: bytes | None = None, b64: str | None = None) -> None:
        if raw is None and b64 is None:
            raise ValueError("Audio needs raw bytes or base64 text")
        self.fmt = fmt
        self._raw = raw
        self._b64 = b64

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            assert self._b64 is not None
            self._raw = b64decode_strict(self._b64)
        return self._raw

    @property
    def b64(self) -> str:
        if self._b64 is None:
            assert self._raw is not None
            self._b64 = _b64encode_as_string(self._raw)
        return self._b64

    @property
    def has_raw(self) -> bool:
        return self._raw is not None

    @property
    def nbytes(self) -> int:
        """Length of the raw audio, computed from the base64 length when not decoded."""
        if self._raw is not None:
            return len(self._raw)
        b = self._b64 or ""
        n = len(b)
        pad = 2 if b.endswith("==") else 1 if b.endswith("=") else 0
        return n // 4 * 3 - pad

    @property
    def duration_ms(self) -> float:
        raw = self._raw
        return (len(raw) if raw is not None else self.nbytes) * self.fmt.ms_per_byte

    def __repr__(self) -> str:
        return f"Audio({self.fmt}, {self.nbytes} B)"


def audio_from_b64(fmt: AudioFormat, text: str) -> Audio:
    """A provider's base64 audio, decoded at once: malformed text raises ``ValueError`` where the
    message is parsed, so the session skips and counts that message (``WsProviderSession``)
    instead of forwarding it to the carrier unchecked or failing later in the transcoder. Both
    representations are kept: passthrough sends the same text, a transcoder never decodes again."""
    return Audio(fmt, raw=b64decode_strict(text), b64=text)


def b64decode_strict(text: str) -> bytes:
    """Base64 with its alphabet and padding checked (``ValueError`` otherwise), decoded in C.
    ``validate`` goes by position: pybase64 parses a keyword argument in about as long as the
    decode of a 20 ms frame takes (measured 565 vs 298 ns a call)."""
    return _b64decode(text, None, True)


# --------------------------------------------------------------------------------------------
# Errors: classified so the router knows whether to retry, cool down or trip the breaker
# --------------------------------------------------------------------------------------------


class ErrorKind(enum.StrEnum):
    RETRYABLE = "retryable"  # transient: try again or try the next candidate
    AUTH = "auth"  # bad/expired key: trip the breaker immediately
    QUOTA = "quota"  # 429 / concurrency / credits exhausted: trip immediately
    CONFIG = "config"  # our configuration is wrong (agent id, format): do not retry this provider
    PROVIDER_DOWN = "provider_down"  # refused, 5xx, abrupt close: counts against health
    TIMEOUT = "timeout"  # connect/handshake deadline passed


class ProviderError(Exception):
    """Raised by ``connect()`` (and carried by ``Failure`` mid-call) with a classification."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


# --------------------------------------------------------------------------------------------
# Events a provider session yields to the call session
# --------------------------------------------------------------------------------------------


@dataclass(slots=True, init=False)
class AudioOut:
    """Agent audio for the caller, in the session's ``output_format``.

    ``item_id`` names the provider's unit of speech (OpenAI item id, ElevenLabs event id) so
    the adapter can later ask how much of it the caller actually heard. The ``__init__`` is written
    out so that mypyc calls it natively (one per agent frame; see ``gateway.carriers.base.Media``).
    """

    audio: Audio
    item_id: str | None

    def __init__(self, audio: Audio, item_id: str | None = None) -> None:
        self.audio = audio
        self.item_id = item_id


@dataclass(slots=True)
class Mark:
    """Ask to be told (via ``ProviderSession.on_mark``) once the caller heard all audio so far."""

    name: str


@dataclass(slots=True)
class Interrupt:
    """Barge-in: drop every queued agent audio chunk and clear the carrier's buffer."""

    reason: str = "user_speech"


@dataclass(slots=True)
class Transcript:
    role: Literal["user", "agent"]
    text: str
    final: bool = True


@dataclass(slots=True)
class ToolCall:
    """A tool the agent invoked; the adapter already answered it (``result``) per its config."""

    name: str
    call_id: str
    arguments: Mapping[str, Any]
    result: Any = None


@dataclass(slots=True)
class Hangup:
    """The provider ended the conversation: play out queued audio, then end the carrier leg."""

    reason: str = "provider_hangup"


@dataclass(slots=True)
class Failure:
    """A provider-side error mid-call. ``fatal`` means the session is unusable (fail over)."""

    kind: ErrorKind
    message: str
    fatal: bool = True


@dataclass(slots=True)
class Notice:
    """Something worth a call event but not an error (e.g. a benign provider warning)."""

    kind: str
    details: Mapping[str, Any] = field(default_factory=dict)


ProviderEvent = AudioOut | Mark | Interrupt | Transcript | ToolCall | Hangup | Failure | Notice


def excerpt(text: str | bytes, limit: int = 200) -> str:
    """The start of a message a decoder could not use, as text for a ``Notice`` (events are JSON)."""
    if isinstance(text, bytes):
        return text[:limit].decode("utf-8", "replace")
    return text[:limit]


@dataclass(slots=True)
class UsageFacts:
    """What the provider consumed, for usage rows. Adapters add to it as the call goes."""

    audio_in_ms: float = 0.0
    audio_out_ms: float = 0.0
    characters: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


# --------------------------------------------------------------------------------------------
# Context handed to connect() and the session object returned
# --------------------------------------------------------------------------------------------


class PlaybackClock(Protocol):
    """How much agent audio the caller has actually heard (from carrier mark echoes)."""

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id`` the caller heard (0 when unknown)."""
        ...


class _NoPlayback:
    def played_ms(self, item_id: str) -> int:
        return 0


@dataclass(slots=True)
class ProviderContext:
    """Everything an adapter needs to open one conversation. Never log ``api_key``."""

    call_id: str
    provider: str
    http: aiohttp.ClientSession
    api_key: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)  # merged platform+workspace JSON
    voice_config: Mapping[str, Any] = field(default_factory=dict)  # agent.voice_config
    agent_config: Mapping[str, Any] = field(default_factory=dict)  # agent.config (prompt, greeting)
    preferred_format: AudioFormat = MULAW_8000  # what the caller's side speaks natively
    caller_number: str = ""
    called_number: str = ""
    history: Sequence[Transcript] = ()  # transcript so far, for continuity after failover
    playback: PlaybackClock = field(default_factory=_NoPlayback)
    connect_timeout: float = 5.0

    @property
    def base_url(self) -> str | None:
        """Endpoint override from ``config.base_url`` (simulators and tests use it)."""
        url = self.config.get("base_url")
        return str(url) if url else None

    def __repr__(self) -> str:  # keep the key out of every repr/log line
        return f"ProviderContext(call_id={self.call_id!r}, provider={self.provider!r})"


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled (setup.py); every adapter extends it
class ProviderSession(ABC):
    """One live conversation with a provider.

    Contract:
    - ``input_format``/``output_format`` are fixed once ``connect()`` returns.
    - ``events()`` is iterated by exactly one task; it ends when the provider's socket is gone.
      Ending without a ``Hangup`` means the provider dropped (the session may fail over).
    - ``close()`` is idempotent, prompt, and makes ``events()`` end.
    """

    # a class attribute (ClassVar): compiled code then finds a plain-Python subclass's own value
    name: ClassVar[str]
    input_format: AudioFormat
    output_format: AudioFormat

    def __init__(self) -> None:
        self.usage = UsageFacts()
        # Set by the call session while it is attached: a provider whose events come from
        # callbacks may hand it one directly (True = taken) when nothing is queued in ``events()``
        # and the reader of ``events()`` is waiting, so order holds and no task switch is spent
        # per frame (``providers/event_feed.py``).
        self.deliver_now: Callable[[ProviderEvent], bool] | None = None
        self.frames_dropped = 0  # caller audio the provider could not take in time (not read)

    @abstractmethod
    async def send_audio(self, audio: Audio) -> None:
        """Caller audio, already in ``input_format``."""

    def send_audio_nowait(self, audio: Audio) -> bool:
        """Take caller audio without the event loop when possible (in-process providers).
        False means "not done": the caller awaits ``send_audio`` instead."""
        return False

    async def send_dtmf(self, digit: str) -> None:  # noqa: B027 - optional hook
        """A keypad digit from the caller (default: ignored by providers with no DTMF input)."""

    async def on_mark(self, name: str) -> None:  # noqa: B027 - optional hook
        """The caller heard all audio up to a ``Mark`` this session asked for."""

    @abstractmethod
    def events(self) -> AsyncIterator[ProviderEvent]:
        """Events from the provider, in order."""

    @abstractmethod
    async def close(self) -> None:
        """Close the provider connection (idempotent)."""


class Connector(Protocol):
    """``async def connect(ctx) -> ProviderSession`` exported by each adapter module."""

    async def __call__(self, ctx: ProviderContext) -> ProviderSession: ...
