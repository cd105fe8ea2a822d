"""What a simulated caller says: tone bursts on silence (for latency measurement) or a given clip."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass

import numpy as np

from loadtest.codec import Encoding, encode

FRAME_MS = 20


@dataclass(frozen=True)
class ToneBursts:
    """A short sine burst every ``period_ms`` on digital silence; each burst onset is a latency probe.

    Bursts start on a frame boundary so the onset's send time is the send time of one frame.
    """

    freq_hz: float = 1000.0
    burst_ms: int = 40
    period_ms: int = 1000
    first_at_ms: int = 500
    amplitude: float = 8000.0


@dataclass(frozen=True)
class PcmClip:
    """Caller audio given as native-order PCM16 at ``sample_rate``; looped when ``loop``."""

    pcm16: bytes
    sample_rate: int = 8000
    loop: bool = True


AudioSource = ToneBursts | PcmClip


Frame = tuple[bytes, bool]  # (base64 payload as ASCII bytes, whether a tone burst starts in it)


@dataclass(frozen=True)
class FrameTrack:
    """Pre-encoded base64 payloads for the call, so the hot path only formats bytes.

    ``frames`` repeat cyclically from ``cycle_start`` (tone bursts repeat every period; a looped clip
    repeats whole), or give way to ``silent_tail`` after the last one (a clip played once).
    """

    frames: tuple[Frame, ...]
    cycle_start: int
    silent_tail: Frame | None

    def playlist(self) -> tuple[tuple[Frame, ...], int]:
        """The frames in play order and the index to go on from after the last one, so a sender
        steps through them with one index (no modulo per frame)."""
        if self.silent_tail is not None:
            return (*self.frames, self.silent_tail), len(self.frames)
        return self.frames, self.cycle_start


@functools.lru_cache(maxsize=16)
def build_track(source: AudioSource, encoding: Encoding, sample_rate: int) -> FrameTrack:
    """Encodes the caller's audio into per-frame payloads at the carrier's rate and codec.

    Cached: calls with the same script share one track, so hundreds of calls read the same few
    payloads per frame (cache-warm) instead of each its own copy.
    """
    samples_per_frame = sample_rate * FRAME_MS // 1000
    silent = (_b64(encode(np.zeros(samples_per_frame, dtype=np.int16).tobytes(), encoding)), False)
    if isinstance(source, ToneBursts):
        return _tone_track(source, encoding, sample_rate, samples_per_frame, silent)
    pcm = np.frombuffer(source.pcm16, dtype=np.int16)
    if source.sample_rate != sample_rate:
        import soxr  # only clips need resampling, keep the import off the tone-burst path

        pcm = soxr.resample(pcm, source.sample_rate, sample_rate).astype(np.int16)
    pad = (-len(pcm)) % samples_per_frame
    pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    frames = tuple(
        (_b64(encode(pcm[i : i + samples_per_frame].tobytes(), encoding)), False)
        for i in range(0, len(pcm), samples_per_frame)
    )
    if not frames:
        frames = (silent,)
    return FrameTrack(frames, 0, None if source.loop else silent)


def _tone_track(
    source: ToneBursts, encoding: Encoding, rate: int, samples_per_frame: int, silent: Frame
) -> FrameTrack:
    if source.first_at_ms % FRAME_MS or source.period_ms % FRAME_MS or source.burst_ms % FRAME_MS:
        raise ValueError("tone burst timings must be multiples of 20 ms")
    if source.burst_ms >= source.period_ms:
        raise ValueError("a tone burst must be shorter than its period")
    n = rate * source.burst_ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    burst = (source.amplitude * np.sin(2 * np.pi * source.freq_hz * t)).astype(np.int16)
    burst_frames = [
        (_b64(encode(burst[i : i + samples_per_frame].tobytes(), encoding)), i == 0)
        for i in range(0, n, samples_per_frame)
    ]
    lead = source.first_at_ms // FRAME_MS
    period = source.period_ms // FRAME_MS
    cycle = burst_frames + [silent] * (period - len(burst_frames))
    return FrameTrack(tuple([silent] * lead + cycle), lead, None)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)
