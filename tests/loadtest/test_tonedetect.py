"""Tone-burst onsets are found, to the millisecond, through G.711 and through 8k->16k->8k resampling."""

from __future__ import annotations

import audioop

import numpy as np
import pytest
import soxr

from loadtest.codec import decode_to_float, encode
from loadtest.tonedetect import ToneOnsetDetector

RATE = 8000
AMP = 8000.0


def _signal(onsets_ms: list[int], total_ms: int, rate: int = RATE, burst_ms: int = 40) -> np.ndarray:
    out = np.zeros(rate * total_ms // 1000, dtype=np.float64)
    n = rate * burst_ms // 1000
    t = np.arange(n) / rate
    for ms in onsets_ms:
        start = rate * ms // 1000
        out[start : start + n] = AMP * np.sin(2 * np.pi * 1000.0 * t)
    return out


def _detect(samples: np.ndarray, rate: int = RATE, chunk: int = 160) -> list[float]:
    det = ToneOnsetDetector(1000.0, rate, AMP)
    found: list[float] = []
    for i in range(0, len(samples), chunk):
        found += det.feed(samples[i : i + chunk].astype(np.float32))
    return found


ONSETS_MS = [500, 1500, 2500]


def test_through_mulaw_in_frames() -> None:
    pcm = _signal(ONSETS_MS, 3000).astype(np.int16).tobytes()
    decoded = decode_to_float(encode(pcm, "PCMU"), "PCMU")
    found = _detect(decoded)
    assert len(found) == len(ONSETS_MS)
    for got, want_ms in zip(found, ONSETS_MS, strict=True):
        assert abs(got / RATE * 1000 - want_ms) <= 1.0


@pytest.mark.parametrize("chunk", [37, 160, 320, 1000])
def test_independent_of_chunking(chunk: int) -> None:
    found = _detect(_signal(ONSETS_MS, 3000), chunk=chunk)
    assert [round(f / RATE * 1000) for f in found] == ONSETS_MS


def test_through_mulaw_and_8k_16k_8k_resampling() -> None:
    pcm = _signal(ONSETS_MS, 3000).astype(np.int16)
    mulaw = audioop.lin2ulaw(pcm.tobytes(), 2)
    up = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="VHQ")
    down = soxr.ResampleStream(16000, 8000, 1, dtype="int16", quality="VHQ")
    out = []
    for i in range(0, len(mulaw), 160):  # frame by frame, as a gateway would
        lin = np.frombuffer(audioop.ulaw2lin(mulaw[i : i + 160], 2), dtype=np.int16)
        wide = up.resample_chunk(lin)
        narrow = down.resample_chunk(wide)
        out.append(audioop.lin2ulaw(narrow.astype(np.int16).tobytes(), 2))
    returned = decode_to_float(b"".join(out), "PCMU")
    found = _detect(returned)
    assert len(found) == len(ONSETS_MS)
    # The resamplers' own delay is real added latency; it must be small and the same for every burst.
    delays = [f / RATE * 1000 - want for f, want in zip(found, ONSETS_MS, strict=True)]
    assert all(0 <= d < 15 for d in delays)
    assert max(delays) - min(delays) <= 1.0


def test_l16_at_16k_and_alaw() -> None:
    wide = _signal(ONSETS_MS, 3000, rate=16000).astype(np.int16).tobytes()
    found = _detect(decode_to_float(encode(wide, "L16"), "L16"), rate=16000, chunk=320)
    assert [round(f / 16000 * 1000) for f in found] == ONSETS_MS
    narrow = _signal(ONSETS_MS, 3000).astype(np.int16).tobytes()
    found = _detect(decode_to_float(encode(narrow, "PCMA"), "PCMA"))
    assert [round(f / RATE * 1000) for f in found] == ONSETS_MS


def test_ignores_silence_other_tones_and_noise() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 1500, RATE * 2)
    t = np.arange(RATE * 2) / RATE
    other = 6000 * np.sin(2 * np.pi * 440 * t)
    assert _detect(np.zeros(RATE * 2)) == []
    assert _detect(noise) == []
    assert _detect(other) == []


def test_one_onset_per_burst_even_with_gain_change() -> None:
    quieter = _signal(ONSETS_MS, 3000) * 0.6
    assert len(_detect(quieter)) == len(ONSETS_MS)


def test_skipping_silence_gives_the_same_onsets() -> None:
    signal = _signal(ONSETS_MS, 3000)
    det = ToneOnsetDetector(1000.0, RATE, AMP)
    found: list[float] = []
    skipped = 0
    for i in range(0, len(signal), 160):
        frame = signal[i : i + 160]
        if not frame.any() and det.skip_silence(len(frame)):
            skipped += 1
            continue
        found += det.feed(frame.astype(np.float32))
    assert skipped > 100
    assert found == _detect(signal)
