"""What one simulated call does (CallPlan), with which credentials, and what it observed (CallResult)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from loadtest.audio import AudioSource, ToneBursts
from loadtest.codec import Encoding
from loadtest.timehist import RunHistograms

Carrier = Literal["twilio", "telnyx"]
EndedBy = Literal["", "carrier", "gateway", "gateway-rest", "error"]


@dataclass(frozen=True)
class CallPlan:
    """One caller's script.

    ``hangup=True``: stream ``duration_s`` of audio, wait up to ``drain_s`` for the gateway's reply audio
    to catch up, then send ``stop`` and close. ``hangup=False``: keep streaming until the gateway ends the
    call; after ``duration_s`` the call is ended by us and reported as an error.
    """

    carrier: Carrier = "twilio"
    to: str = "+15550100001"
    from_: str = "+15550199999"
    duration_s: float = 5.0
    audio: AudioSource = field(default_factory=ToneBursts)
    dtmf: tuple[tuple[float, str], ...] = ()
    hangup: bool = True
    drain_s: float = 0.5
    telnyx_encoding: Encoding = "PCMU"
    telnyx_sample_rate: int | None = None
    keep_audio: bool = False
    # Telnyx only: every N-th frame is sent after the next one, as out-of-order RTP would deliver it
    # ("ordering is not guaranteed", telephony.md 2.2); 0 keeps order.
    reorder_every: int = 0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        if self.reorder_every and self.carrier != "telnyx":
            raise ValueError(
                "reorder_every models out-of-order RTP delivery: Telnyx only (Twilio is in order)"
            )
        if self.reorder_every < 0 or self.reorder_every == 1:
            raise ValueError("reorder_every must be 0 (off) or at least 2")

    def inbound_rate(self) -> int:
        if self.carrier == "twilio":
            return 8000
        if self.telnyx_sample_rate is not None:
            return self.telnyx_sample_rate
        return 16000 if self.telnyx_encoding == "L16" else 8000


@dataclass(frozen=True)
class Credentials:
    """Signing secrets; ``from_env`` reads VOICEGW_TWILIO_AUTH_TOKEN / VOICEGW_TELNYX_PRIVATE_KEY."""

    twilio_auth_token: str | None = None
    telnyx_private_key: str | None = None
    twilio_account_sid: str = "AC" + "10" * 16

    @classmethod
    def from_env(
        cls, twilio_auth_token: str | None = None, telnyx_private_key: str | None = None
    ) -> Credentials:
        return cls(
            twilio_auth_token=twilio_auth_token or os.environ.get("VOICEGW_TWILIO_AUTH_TOKEN"),
            telnyx_private_key=telnyx_private_key or os.environ.get("VOICEGW_TELNYX_PRIVATE_KEY"),
        )


@dataclass(slots=True)
class CallResult:
    """Everything one call observed. Times are ``time.monotonic()`` seconds; latencies in ms."""

    carrier: Carrier
    call_sid: str
    http_status: int | None = None
    refused: bool = False
    refusal_text: str = ""
    call_id: str | None = None
    stream_url: str | None = None
    placed_at: float = 0.0
    media_started_at: float | None = None
    ended_at: float | None = None
    frames_sent: int = 0
    bytes_sent: int = 0
    audio_s_sent: float = 0.0
    frames_received: int = 0
    bytes_received: int = 0
    audio_s_received: float = 0.0
    dtmf_sent: int = 0
    marks_received: int = 0
    marks_echoed_played: int = 0
    marks_echoed_cleared: int = 0
    clears_received: int = 0
    bytes_cleared: int = 0
    bursts_sent: int = 0
    bursts_lost: int = 0
    bursts_answered: int = 0  # returned onsets matched to a sent burst: one latency sample each
    spurious_onsets: int = 0
    # Where the call's latency, play-out latency and frame lateness went: the load run's shared
    # histograms, or the call's own when it was placed alone (set by place_call).
    histograms: RunHistograms | None = None
    jitter_ms: float = 0.0
    close_code: int | None = None
    close_reason: str = ""
    ended_by: EndedBy = ""
    protocol_violations: int = 0
    errors: list[str] = field(default_factory=list)
    received_audio: bytes | None = None
    played_audio: bytes | None = None
    received_encoding: Encoding = "PCMU"
    received_rate: int = 8000

    @property
    def failed(self) -> bool:
        """Not refused, yet something went wrong (HTTP error, bad answer, socket failure, violations)."""
        return not self.refused and bool(self.errors)

    @property
    def return_ratio(self) -> float:
        """Audio seconds the gateway sent back per second sent (1.0 for a lossless echo)."""
        return self.audio_s_received / self.audio_s_sent if self.audio_s_sent else 0.0

    def add_error(self, text: str) -> None:
        # Bounded: a misbehaving gateway must not make the generator's memory grow per frame.
        if len(self.errors) < 20:
            self.errors.append(text)
