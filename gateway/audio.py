"""G.711 / PCM16 codecs, streaming resampling and per-stream transcoding (per-frame hot path).

Codecs are CPython's ``audioop`` (``audioop-lts`` on Python >= 3.13), so the bytes are identical
to what the fake carriers and simulators produce with the same module. ``pcm16`` means signed
16-bit little-endian, which is also ``audioop``'s native order on every host we run on.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import soxr

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


# Variable-rate mode selects libsoxr's "vr32" engine. Measured (python-soxr 1.1, 20 ms frames):
# it emits output on every frame with a constant 15-30 ms lag, while the default FFT engines
# (any quality) hold output back and release it in ~100 ms bursts (lag up to 115 ms), which
# would add latency and jitter to every call. Its filter attenuates a tone just above the
# target Nyquist (16k->8k, 4.1 kHz) by > 80 dB, with a flat passband to 3.4 kHz.
# The ratio is fixed per instance, as the vr API requires for the maximum ratio.
_SOXR_VARIABLE_RATE = True
_SOXR_QUALITY = "HQ"


class StreamResampler:
    """Mono int16 resampler that keeps filter history across frames (no clicks at boundaries).

    ``process`` may return ``b""`` (soxr is still filling its filter); callers must skip
    empty output rather than send empty frames.
    """

    __slots__ = ("_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(
            in_rate, out_rate, 1, dtype="int16", quality=_SOXR_QUALITY, vr=_SOXR_VARIABLE_RATE
        )

    def process(self, pcm: bytes) -> bytes:
        if len(pcm) % 2:
            raise ValueError(f"pcm16 needs an even number of bytes, got {len(pcm)}")
        if not pcm:
            return b""
        out = self._stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16))
        return out.tobytes()

    def reset(self) -> None:
        """Forget filter history, e.g. after a barge-in or a provider switch."""
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
