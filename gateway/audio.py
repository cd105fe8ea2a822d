"""G.711 / PCM16 codecs, streaming resampling and per-stream transcoding (per-frame hot path).

Codecs are CPython's ``audioop`` (``audioop-lts`` on Python >= 3.13), so the bytes are identical
to what the fake carriers and simulators produce with the same module. ``pcm16`` means signed
16-bit little-endian, which is also ``audioop``'s native order on every host we run on.
"""

from __future__ import annotations

import functools
import sys
import warnings

import numpy as np
import soxr

from gateway._polyphase import PolyphaseFIR
from providers.base import Audio, AudioFormat

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 (PEP 594); on >= 3.13 the audioop-lts package provides it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

if sys.byteorder != "little":  # pragma: no cover - audioop works in native order
    raise ImportError("gateway.audio assumes a little-endian host (pcm16 is little-endian)")

__all__ = [
    "StreamResampler",
    "Transcoder",
    "alaw_to_pcm16",
    "l16be_to_pcm16",
    "pcm16_to_alaw",
    "pcm16_to_l16be",
    "pcm16_to_ulaw",
    "ulaw_to_pcm16",
]


def ulaw_to_pcm16(data: bytes) -> bytes:
    return audioop.ulaw2lin(data, 2)


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Raises ``audioop.error`` on an odd number of bytes (not a whole number of samples)."""
    return audioop.lin2ulaw(data, 2)


def alaw_to_pcm16(data: bytes) -> bytes:
    return audioop.alaw2lin(data, 2)


def pcm16_to_alaw(data: bytes) -> bytes:
    return audioop.lin2alaw(data, 2)


def l16be_to_pcm16(data: bytes) -> bytes:
    """Network-order (big-endian, RFC 2586) L16 to little-endian PCM16."""
    return audioop.byteswap(data, 2)


def pcm16_to_l16be(data: bytes) -> bytes:
    return audioop.byteswap(data, 2)


# Rates that differ by an integer factor (8k <-> 16k/24k/48k: every carrier <-> provider pair
# but 22.05k/44.1k) go through a short polyphase FIR below; the rest through libsoxr.
#
# Why not soxr for everything: fed 20 ms frames, soxr's streaming engines hold audio back. Its
# variable-rate "vr32" engine withholds 10 ms (8k->16k) and 15 ms (16k->8k) of every frame, and
# since the carrier gets whole 20 ms frames, a transcoded round trip (8k -> 16k -> provider ->
# 8k) reached the caller 3 frames = 60 ms late (measured: `voicegw bench` (c) floor 61 ms). The
# fixed-rate engines release output in ~100 ms bursts (any quality, minimum phase included). A
# linear-phase FIR whose transition band sits between 3.4 kHz and the low rate's Nyquist delays
# the signal by ~4 ms per direction and returns a full frame for every frame.
_SOXR_VARIABLE_RATE = True  # soxr engine for the other ratios; see above
_SOXR_QUALITY = "HQ"
_FIR_STOPBAND_DB = 75.0  # at and above the low rate's Nyquist (4 kHz for 8k)
_FIR_TRANSITION_HZ = 600.0  # pass band flat to Nyquist - 600 Hz (3.4 kHz for 8k: the phone band)


def _lowpass_taps(high_rate: int, low_rate: int) -> np.ndarray:
    """Kaiser-windowed sinc at ``high_rate`` cutting at the low rate's Nyquist minus half the
    transition (standard Kaiser design formulas), unit DC gain, odd length (integer delay)."""
    nyquist = low_rate / 2
    cutoff = (nyquist - _FIR_TRANSITION_HZ / 2) / high_rate  # cycles per sample
    width = 2 * np.pi * _FIR_TRANSITION_HZ / high_rate
    n = int(np.ceil((_FIR_STOPBAND_DB - 7.95) / (2.285 * width))) | 1
    beta = 0.1102 * (_FIR_STOPBAND_DB - 8.7)
    m = np.arange(n) - (n - 1) / 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(n, beta)
    return taps / taps.sum()


_INT16 = np.dtype(np.int16)  # a dtype object: np.frombuffer(b, _INT16) costs half of dtype=np.int16


@functools.cache
def _filter_bank(in_rate: int, out_rate: int) -> bytes:
    """float32 (L, branch length), row-major: row ``p`` is the up-by-``L`` polyphase branch for
    output phase ``p`` (taps ``p, p + L, ...`` times ``L``), time-reversed because the kernel
    correlates. Down by ``M`` is the ``L = 1`` case: one row, the whole filter."""
    up = out_rate // in_rate if out_rate > in_rate else 1
    taps = _lowpass_taps(max(in_rate, out_rate), min(in_rate, out_rate)) * up
    bank = np.zeros(-(-len(taps) // up) * up)
    bank[: len(taps)] = taps
    return bank.reshape(-1, up)[::-1].T.astype(np.float32).tobytes()


def _integer_ratio_fir(in_rate: int, out_rate: int) -> PolyphaseFIR:
    """A streaming FIR (gateway/_polyphase.c) for ``_filter_bank``: one native call per chunk.

    A 20 ms frame is only ~20k multiply-adds. numpy spread them over ~10 calls whose fixed cost
    was most of the 2.4 us a frame took; the C kernel takes ~1.0 us (AVX2) or ~1.6 us (SSE2).
    It keeps the last (branch length - 1) input samples, so any chunking gives the same output,
    and yields each chunk's share at once (``n * L`` or ~``n / M`` samples; which inputs ``M``
    keeps carries over). float32 inside: within 1 LSB of a float64 convolution.
    """
    up = out_rate // in_rate if out_rate > in_rate else 1
    down = in_rate // out_rate if in_rate > out_rate else 1
    return PolyphaseFIR(_filter_bank(in_rate, out_rate), up, down)


class StreamResampler:
    """Mono int16 resampler that keeps filter history across frames (no clicks at boundaries).

    ``process`` may return ``b""`` (soxr is still filling its filter); callers must skip
    empty output rather than send empty frames.
    """

    __slots__ = ("_fir", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._fir: PolyphaseFIR | None = None
        self._stream: soxr.ResampleStream | None = None
        if max(in_rate, out_rate) % min(in_rate, out_rate) == 0:
            self._fir = _integer_ratio_fir(in_rate, out_rate)
        else:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="int16", quality=_SOXR_QUALITY, vr=_SOXR_VARIABLE_RATE
            )

    def process(self, pcm: bytes) -> bytes:
        if len(pcm) % 2:
            raise ValueError(f"pcm16 needs an even number of bytes, got {len(pcm)}")
        if not pcm:
            return b""
        if self._fir is not None:
            return self._fir.process(pcm)
        assert self._stream is not None
        return self._stream.resample_chunk(np.frombuffer(pcm, _INT16)).tobytes()

    def reset(self) -> None:
        """Forget filter history, e.g. after a barge-in or a provider switch."""
        if self._fir is not None:
            self._fir.reset()
        else:
            assert self._stream is not None
            self._stream.clear()


_DECODERS = {"mulaw": ulaw_to_pcm16, "alaw": alaw_to_pcm16}
_ENCODERS = {"mulaw": pcm16_to_ulaw, "alaw": pcm16_to_alaw}


class Transcoder:
    """Converts one direction of one stream from ``src`` to ``dst``; state lives per stream.

    When ``src == dst`` it is a passthrough: ``convert`` hands back the very same ``Audio``
    (its base64 text is forwarded untouched, nothing is decoded) and ``frames_converted``
    stays 0. PCM16 input may be split mid-sample (providers stream arbitrary byte chunks):
    a dangling odd byte is carried over to the next frame instead of being rejected.
    """

    __slots__ = (
        "_carry",
        "_decode",
        "_encode",
        "_resampler",
        "dst",
        "frames_converted",
        "is_passthrough",
        "src",
    )

    def __init__(self, src: AudioFormat, dst: AudioFormat) -> None:
        self.src = src
        self.dst = dst
        self.is_passthrough = src == dst
        self.frames_converted = 0
        self._carry = b""
        self._decode = _DECODERS.get(src.encoding)
        self._encode = _ENCODERS.get(dst.encoding)
        self._resampler = (
            StreamResampler(src.sample_rate, dst.sample_rate) if src.sample_rate != dst.sample_rate else None
        )

    def convert(self, audio: Audio) -> Audio | None:
        """``audio`` in ``dst`` format, or ``None`` while no output is available yet."""
        if self.is_passthrough:
            return audio
        if audio.fmt is not self.src and audio.fmt != self.src:
            raise ValueError(f"transcoder expects {self.src}, got {audio.fmt}")
        data = audio.raw
        if self._decode is not None:
            pcm = self._decode(data)
        else:
            if self._carry:
                data = self._carry + data
                self._carry = b""
            if len(data) % 2:
                self._carry = data[-1:]
                data = data[:-1]
            pcm = data
        self.frames_converted += 1
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if not pcm:
            return None
        return Audio(self.dst, raw=self._encode(pcm) if self._encode is not None else pcm)

    def reset(self) -> None:
        """Drop resampler history and any carried byte (new utterance, provider or stream)."""
        self._carry = b""
        if self._resampler is not None:
            self._resampler.reset()
