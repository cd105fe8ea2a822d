"""G.711 / PCM16 codecs, streaming resampling and per-stream transcoding (per-frame hot path).

Codecs are CPython's ``audioop`` (``audioop-lts`` on Python >= 3.13), so the bytes are identical
to what the fake carriers and simulators produce with the same module. ``pcm16`` means signed
16-bit little-endian, which is also ``audioop``'s native order on every host we run on.
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, cast

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


_FIR_BLOCK = 16  # output samples per row of the one matrix product a chunk costs; see below
_FIR_MAX_CHUNK = 1920  # longer input is fed in pieces (a multiple of every M: same phase each)
_FIR_MAX_PLANS = 4  # chunk sizes whose buffers a resampler keeps (frames are almost all one size)
# 0-d float32 arrays: as clip bounds they cost numpy less than Python or numpy scalars.
_INT16_MIN = np.array(-32768, dtype=np.float32)
_INT16_MAX = np.array(32767, dtype=np.float32)
_INT16_MIN.flags.writeable = _INT16_MAX.flags.writeable = False
_INT16 = np.dtype(np.int16)  # a dtype object: np.frombuffer(b, _INT16) costs half of dtype=np.int16


def _clip_ufunc() -> Callable[..., Any]:
    """The clip ufunc itself: ``ndarray.clip``'s Python wrapper doubles its cost on a 20 ms frame.
    Its home is private (``numpy._core.umath``, ``numpy.core.umath`` before 2.0); else ``np.clip``."""
    for module in ("numpy._core.umath", "numpy.core.umath"):
        try:
            return cast(Callable[..., Any], importlib.import_module(module).clip)
        except (ImportError, AttributeError):
            continue
    return np.clip


_clip = _clip_ufunc()


@functools.cache
def _filter_bank(in_rate: int, out_rate: int) -> np.ndarray:
    """(branch length, L) float32: column ``p`` is the up-by-``L`` polyphase branch for output
    phase ``p`` (taps ``p, p + L, ...`` times ``L``), time-reversed because products below are
    correlations. Down by ``M`` is the ``L = 1`` case: one column, the whole filter."""
    up = out_rate // in_rate if out_rate > in_rate else 1
    taps = _lowpass_taps(max(in_rate, out_rate), min(in_rate, out_rate)) * up
    bank = np.zeros(-(-len(taps) // up) * up)
    bank[: len(taps)] = taps
    bank = bank.reshape(-1, up)[::-1].astype(np.float32)
    bank.flags.writeable = False
    return bank


@functools.cache
def _block_filter(in_rate: int, out_rate: int, block: int) -> np.ndarray:
    """(window, block * L) float32 block-Toeplitz matrix: one input window of
    ``(block - 1) * M + branch length`` samples to ``block`` output samples, ``L`` phases each,
    interleaved. Output sample ``s`` of the block starts ``s * M`` samples into the window."""
    bank = _filter_bank(in_rate, out_rate)
    down = in_rate // out_rate if in_rate > out_rate else 1
    branch, up = bank.shape
    matrix = np.zeros(((block - 1) * down + branch, block, up), dtype=np.float32)
    for s in range(block):
        matrix[s * down : s * down + branch, s] = bank
    matrix = matrix.reshape(len(matrix), block * up)
    matrix.flags.writeable = False
    return matrix


class _Plan(NamedTuple):
    """What one chunk size (and down-sampling phase) needs, built once; views into the buffer."""

    chunk: np.ndarray  # where the new input samples go, right after the history
    windows: np.ndarray  # (blocks, window) overlapping strided view of the buffer
    contiguous: np.ndarray  # same shape, C-contiguous: what BLAS can multiply
    matrix: np.ndarray  # _block_filter
    out: np.ndarray  # (blocks, block * L) float32, row-major = output order
    pcm: np.ndarray  # same shape, int16
    history: np.ndarray  # buffer head ...
    tail: np.ndarray  # ... and the samples that become it after this chunk
    next_phase: int


class _IntegerRatioResampler:
    """Streaming polyphase FIR for ``out = in * L`` or ``out = in / M`` with integer ``L`` / ``M``.

    The last (branch length - 1) input samples stay at the head of a float32 buffer and each chunk
    is written after them, so any chunking gives the same output; every chunk yields its share of
    output at once (``n * L`` or ~``n / M`` samples; which inputs ``M`` keeps carries over).

    A 20 ms frame is only ~20k multiply-adds, so numpy's per-call overhead is the cost: the whole
    chunk is ONE matrix product. Outputs go in blocks of ``_FIR_BLOCK``; block ``b`` reads the
    input window starting at ``b * _FIR_BLOCK * M`` and ``_block_filter`` maps it to the block's
    outputs, already interleaved. The windows overlap (a strided view, no copy); one copy makes
    them contiguous for BLAS: ~13x less data than one window per output sample would be.
    Buffers and views per chunk size are cached, so a frame costs ~10 numpy calls, none allocating
    but ``tobytes``; long chunks go in ``_FIR_MAX_CHUNK`` pieces to bound that memory. float32: the
    result is within 1 LSB of float64 and the gemm is faster.
    """

    __slots__ = (
        "_buffer",
        "_down",
        "_history",
        "_in_rate",
        "_last_key",
        "_last_plan",
        "_out_rate",
        "_phase",
        "_plans",
    )

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._down = in_rate // out_rate if in_rate > out_rate else 1
        self._history = len(_filter_bank(in_rate, out_rate)) - 1
        self._buffer = np.zeros(self._history, dtype=np.float32)
        self._plans: dict[int, _Plan] = {}  # by chunk length * down + phase
        self._phase = 0  # input samples consumed, modulo ``down``: which ones are kept
        # The plan of the previous chunk: a stream's frames are all one size, and a dict lookup
        # per frame was ~7 % of the resampler's cost.
        self._last_key = -1
        self._last_plan: _Plan | None = None

    def process(self, x: np.ndarray) -> bytes:
        """int16 samples in, int16 pcm out (rounded half to even, clipped)."""
        if len(x) > _FIR_MAX_CHUNK:
            return b"".join(self.process(x[i : i + _FIR_MAX_CHUNK]) for i in range(0, len(x), _FIR_MAX_CHUNK))
        key = len(x) * self._down + self._phase
        plan = self._last_plan
        if key != self._last_key or plan is None:
            plan = self._plans.get(key) or self._plan(len(x), key)
            self._last_key = key
            self._last_plan = plan
        chunk, windows, contiguous, matrix, out, pcm, history, tail, self._phase = plan
        chunk[...] = x
        contiguous[...] = windows
        np.dot(contiguous, matrix, out=out)
        history[...] = tail  # overlapping when the chunk is shorter than the history: numpy copes
        _clip(out, _INT16_MIN, _INT16_MAX, out=out)
        np.rint(out, out=out)
        pcm[...] = out
        return pcm.tobytes()

    def _plan(self, n: int, key: int) -> _Plan:
        """Builds and caches under ``key`` the plan for an ``n``-sample chunk at the current phase."""
        m, h = self._down, self._history
        if len(self._buffer) < h + n:
            grown = np.zeros(h + n, dtype=np.float32)
            grown[:h] = self._buffer[:h]
            self._buffer = grown
            self._plans.clear()  # their views point into the old buffer (process replaces the last one)
        elif len(self._plans) >= _FIR_MAX_PLANS:
            self._plans.clear()
        first = -self._phase % m  # first kept input sample of the chunk
        count = len(range(first, n, m))
        block = max(b for b in range(1, _FIR_BLOCK + 1) if count % b == 0)
        matrix = _block_filter(self._in_rate, self._out_rate, block)
        shape = (count // block, len(matrix))
        size = self._buffer.itemsize
        # Output j is for chunk sample first + j * m, at buffer index h + first + j * m, so its
        # window (branch length = h + 1 samples ending there) starts at first + j * m.
        windows = np.ndarray(shape, np.float32, self._buffer, first * size, (block * m * size, size))
        out = np.empty((shape[0], matrix.shape[1]), dtype=np.float32)
        plan = _Plan(
            chunk=self._buffer[h : h + n],
            windows=windows,
            contiguous=np.empty(shape, dtype=np.float32),
            matrix=matrix,
            out=out,
            pcm=np.empty(out.shape, dtype=np.int16),
            history=self._buffer[:h],
            tail=self._buffer[n : n + h],
            next_phase=(self._phase + n) % m,
        )
        self._plans[key] = plan
        return plan

    def reset(self) -> None:
        self._buffer[: self._history] = 0.0
        self._phase = 0


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
        self._fir: _IntegerRatioResampler | None = None
        self._stream: soxr.ResampleStream | None = None
        if max(in_rate, out_rate) % min(in_rate, out_rate) == 0:
            self._fir = _IntegerRatioResampler(in_rate, out_rate)
        else:
            self._stream = soxr.ResampleStream(
                in_rate, out_rate, 1, dtype="int16", quality=_SOXR_QUALITY, vr=_SOXR_VARIABLE_RATE
            )

    def process(self, pcm: bytes) -> bytes:
        if len(pcm) % 2:
            raise ValueError(f"pcm16 needs an even number of bytes, got {len(pcm)}")
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, _INT16)
        if self._fir is None:
            assert self._stream is not None
            return self._stream.resample_chunk(samples).tobytes()
        return self._fir.process(samples)

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
