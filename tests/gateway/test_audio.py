"""Codecs, the streaming resampler and the per-stream transcoder."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable

import numpy as np
import pytest

from gateway._polyphase import KERNELS, PolyphaseFIR
from gateway.audio import (
    StreamResampler,
    Transcoder,
    _filter_bank,
    _lowpass_taps,
    alaw_to_pcm16,
    l16be_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_l16be,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from providers.base import (
    ALAW_8000,
    MULAW_8000,
    PCM16_8000,
    PCM16_16000,
    PCM16_24000,
    Audio,
    AudioFormat,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Codec = Callable[[bytes], bytes]
RefCodec = Callable[[bytes, int], bytes]

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def tone(freq: float, rate: int, seconds: float, amp: float = 16000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int64)


def stream_through(resampler: StreamResampler, data: bytes, frame_bytes: int) -> bytes:
    return b"".join(resampler.process(data[i : i + frame_bytes]) for i in range(0, len(data), frame_bytes))


def rms_db(x: np.ndarray, reference_amp: float) -> float:
    x = x.astype(np.float64)
    return 20 * float(np.log10(np.sqrt(np.mean(x * x)) / (reference_amp / np.sqrt(2)) + 1e-12))


# ---------------------------------------------------------------------------------------------
# G.711 and L16
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "decode", "ref_encode", "ref_decode"),
    [
        (pcm16_to_ulaw, ulaw_to_pcm16, audioop.lin2ulaw, audioop.ulaw2lin),
        (pcm16_to_alaw, alaw_to_pcm16, audioop.lin2alaw, audioop.alaw2lin),
    ],
)
def test_g711_is_byte_identical_to_audioop(
    encode: Codec, decode: Codec, ref_encode: RefCodec, ref_decode: RefCodec
) -> None:
    every_sample = pcm(ALL_INT16)
    assert encode(every_sample) == ref_encode(every_sample, 2)
    assert decode(ALL_CODES) == ref_decode(ALL_CODES, 2)


@pytest.mark.parametrize(
    ("encode", "decode"), [(pcm16_to_ulaw, ulaw_to_pcm16), (pcm16_to_alaw, alaw_to_pcm16)]
)
def test_g711_round_trip_within_quantisation_bound(encode: Codec, decode: Codec) -> None:
    # G.711 steps are at most 1/16 of the magnitude; with CPython's truncating encoder the
    # error stays under |x|/32 + 8 for every int16 (the clipped top of mu-law included).
    back = samples(decode(encode(pcm(ALL_INT16))))
    x = ALL_INT16.astype(np.int64)
    assert np.all(np.abs(back - x) <= np.abs(x) / 32 + 8)


def test_g711_codes_survive_decode_encode() -> None:
    assert pcm16_to_alaw(alaw_to_pcm16(ALL_CODES)) == ALL_CODES
    ulaw_back = pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES))
    # 0x7F is mu-law's "negative zero": it decodes to 0, which encodes as the silence code 0xFF.
    assert [c for c, r in zip(ALL_CODES, ulaw_back, strict=True) if c != r] == [0x7F]
    assert ulaw_back[0x7F] == 0xFF


def test_g711_silence_codes() -> None:
    assert pcm16_to_ulaw(bytes(320)) == b"\xff" * 160
    assert pcm16_to_alaw(bytes(320)) == b"\xd5" * 160
    assert base64.b64encode(b"\xff" * 160).decode().startswith("////")


def test_g711_speech_level_snr() -> None:
    x = tone(440, 8000, 1.0, amp=8000)
    for encode, decode in ((pcm16_to_ulaw, ulaw_to_pcm16), (pcm16_to_alaw, alaw_to_pcm16)):
        noise = samples(decode(encode(pcm(x)))) - x
        snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))
        assert snr > 35


def test_odd_pcm16_is_rejected_by_encoders() -> None:
    with pytest.raises(audioop.error):
        pcm16_to_ulaw(b"\x00\x01\x02")


def test_l16_big_endian_swap() -> None:
    assert l16be_to_pcm16(b"\x01\x02\xff\xfe") == b"\x02\x01\xfe\xff"
    assert samples(l16be_to_pcm16(b"\x01\x02")).tolist() == [0x0102]
    data = pcm(ALL_INT16)
    assert pcm16_to_l16be(data) == ALL_INT16.astype(">i2").tobytes()
    assert l16be_to_pcm16(pcm16_to_l16be(data)) == data


# ---------------------------------------------------------------------------------------------
# Resampler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "freq"),
    [
        (16000, 8000, 5000),
        (16000, 8000, 4200),
        (24000, 8000, 6000),
        (48000, 8000, 4500),
        (24000, 16000, 9000),
    ],
)
def test_stop_band_attenuation_at_least_60_db(in_rate: int, out_rate: int, freq: int) -> None:
    resampler = StreamResampler(in_rate, out_rate)
    out = samples(stream_through(resampler, pcm(tone(freq, in_rate, 1.0)), in_rate // 50 * 2))
    assert len(out) > out_rate // 2
    assert rms_db(out[len(out) // 4 :], 16000) <= -60


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000)]
)
def test_pass_band_tone_keeps_its_level(in_rate: int, out_rate: int) -> None:
    out = samples(stream_through(StreamResampler(in_rate, out_rate), pcm(tone(1000, in_rate, 1.0)), 320))
    assert abs(rms_db(out[len(out) // 4 :], 16000)) < 0.5


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (24000, 8000), (16000, 24000)]
)
def test_chunked_output_matches_one_shot(in_rate: int, out_rate: int) -> None:
    """Filter history is kept across frames: any chunking gives the same signal (to dither LSBs)."""
    x = pcm(tone(440, in_rate, 1.0) // 2 + tone(1900, in_rate, 1.0) // 2)
    one_shot = samples(StreamResampler(in_rate, out_rate).process(x))
    rng = np.random.default_rng(7)
    chunked_resampler = StreamResampler(in_rate, out_rate)
    parts: list[bytes] = []
    pos = 0
    while pos < len(x):
        size = int(rng.integers(1, 400)) * 2
        parts.append(chunked_resampler.process(x[pos : pos + size]))
        pos += size
    chunked = samples(b"".join(parts))
    n = min(len(one_shot), len(chunked))
    assert n > out_rate * 0.9
    assert np.max(np.abs(one_shot[:n] - chunked[:n])) <= 4


INTEGER_RATIOS = [
    (8000, 16000),
    (16000, 8000),
    (8000, 24000),
    (24000, 8000),
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
]


def reference_fir(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """The integer-ratio path the slow, obvious way: zero-stuff by L, convolve the whole signal
    with the taps in float64 from silence, keep every M-th sample (the first one included)."""
    up, down = max(out_rate // in_rate, 1), max(in_rate // out_rate, 1)
    stuffed = np.zeros(len(x) * up)
    stuffed[::up] = x
    y = np.convolve(stuffed, _lowpass_taps(max(in_rate, out_rate), min(in_rate, out_rate)) * up)
    return np.clip(np.rint(y[: len(stuffed) : down]), -32768, 32767).astype(np.int64)


def chunk_sizes(chunking: str, rate: int, total: int, rng: np.random.Generator) -> list[int]:
    if chunking == "one-shot":
        return [total]
    if chunking == "20ms":
        return [rate // 50] * (total // (rate // 50) + 1)
    top = 6 if chunking == "tiny" else 400  # tiny: shorter than the history, often no kept sample
    return [int(size) for size in rng.integers(1, top, total)]


@pytest.mark.parametrize("chunking", ["one-shot", "20ms", "random", "tiny"])
@pytest.mark.parametrize(("in_rate", "out_rate"), INTEGER_RATIOS)
def test_integer_ratio_matches_whole_signal_convolution(in_rate: int, out_rate: int, chunking: str) -> None:
    """Any chunking (odd sizes, many sizes, down-sampling phase across chunks) gives the reference's
    samples to 1 LSB (float32 inside), clipping included: a full-scale square wave overshoots."""
    rng = np.random.default_rng(in_rate + out_rate)
    square = np.where(tone(300, in_rate, 0.1) >= 0, 32767, -32768).astype(np.int16)
    noise = rng.integers(-32768, 32768, in_rate // 20).astype(np.int16)
    x = np.concatenate((tone(440, in_rate, 0.2) // 2 + tone(1900, in_rate, 0.2) // 2, square, noise))
    data = pcm(x)
    up, down = max(out_rate // in_rate, 1), max(in_rate // out_rate, 1)
    resampler = StreamResampler(in_rate, out_rate)
    parts: list[bytes] = []
    pos = 0
    for size in chunk_sizes(chunking, in_rate, len(x), rng):
        if pos >= len(x):
            break
        out = resampler.process(data[2 * pos : 2 * (pos + size)])
        kept = range(pos, min(pos + size, len(x)))[-pos % down :: down]
        assert len(out) == 2 * up * len(kept)  # each chunk's share, at once
        parts.append(out)
        pos += size
    got = samples(b"".join(parts))
    expected = reference_fir(x, in_rate, out_rate)
    assert len(got) == len(expected)
    assert np.max(np.abs(got - expected)) <= 1
    assert np.max(np.abs(expected)) >= 32767  # the clipping path was exercised


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("in_rate", "out_rate"), INTEGER_RATIOS)
def test_every_native_kernel_matches_whole_signal_convolution(
    in_rate: int, out_rate: int, kernel: str
) -> None:
    """The default kernel is the fastest this CPU runs (AVX2 here); the portable one (SSE2/NEON)
    is what other machines get, so both are held to the reference, with random chunking."""
    rng = np.random.default_rng(abs(out_rate - in_rate))
    x = np.concatenate(
        (tone(440, in_rate, 0.2) // 2, rng.integers(-32768, 32768, in_rate // 10).astype(np.int16))
    )
    up, down = max(out_rate // in_rate, 1), max(in_rate // out_rate, 1)
    fir = PolyphaseFIR(_filter_bank(in_rate, out_rate), up, down, kernel=kernel)
    data, parts, pos = pcm(x), [], 0
    for size in chunk_sizes("random", in_rate, len(x), rng):
        if pos >= len(x):
            break
        parts.append(fir.process(data[2 * pos : 2 * (pos + size)]))
        pos += size
    got, expected = samples(b"".join(parts)), reference_fir(x, in_rate, out_rate)
    assert len(got) == len(expected)
    assert np.max(np.abs(got - expected)) <= 1


def test_native_fir_refuses_what_it_cannot_run() -> None:
    bank = _filter_bank(8000, 16000)
    with pytest.raises(ValueError, match="no kernel"):
        PolyphaseFIR(bank, 2, 1, kernel="avx9000")
    with pytest.raises(ValueError, match="float32"):
        PolyphaseFIR(bank, 2, 2)  # up and down at once: not an integer ratio
    with pytest.raises(ValueError, match="float32"):
        PolyphaseFIR(bank[:-4], 2, 1)  # rows of unequal length
    fir = PolyphaseFIR(bank, 2, 1)
    with pytest.raises(ValueError, match="even"):
        fir.process(b"\x00\x00\x00")
    with pytest.raises(TypeError):
        fir.process("not bytes")  # type: ignore[arg-type]
    assert fir.process(bytearray(4)) == bytes(8)  # any buffer; silence stays silence


def test_no_discontinuity_at_20ms_frame_boundaries() -> None:
    freq, amp = 440, 16000
    out = samples(stream_through(StreamResampler(8000, 16000), pcm(tone(freq, 8000, 1.0, amp)), 320))
    steady = out[800:]  # skip the filter's start-up transient
    max_jump = 2 * np.pi * freq / 16000 * amp  # steepest slope of the ideal sine per sample
    assert np.max(np.abs(np.diff(steady))) <= max_jump * 1.05 + 4


def test_resampler_tolerates_empty_and_rejects_odd_input() -> None:
    resampler = StreamResampler(8000, 16000)
    assert resampler.process(b"") == b""
    with pytest.raises(ValueError, match="even"):
        resampler.process(b"\x00\x00\x00")
    with pytest.raises(ValueError):
        StreamResampler(0, 8000)


def test_resampler_keeps_real_time_cadence() -> None:
    """Every 20 ms frame after the first yields output: no 100 ms bursts (latency/jitter)."""
    resampler = StreamResampler(16000, 8000)
    sizes = [len(resampler.process(bytes(640))) for _ in range(50)]
    assert all(size > 0 for size in sizes[1:])
    assert sum(sizes) >= 49 * 320


@pytest.mark.parametrize("size", [0, 1, 2, 3, 160, 640, 960])
def test_audio_base64_matches_the_standard_library(size: int) -> None:
    """The SIMD codec gives the stdlib's text and bytes, both ways, for every padding case."""
    raw = bytes(range(256)) * 4
    raw = raw[:size]
    text = base64.b64encode(raw).decode()
    assert Audio(MULAW_8000, raw=raw).b64 == text
    assert Audio(MULAW_8000, b64=text).raw == raw


@pytest.mark.parametrize("text", ["abc", "ab=c", "=abc", "ab c", "abcd\n", "ab-_", "ééé=", "abcd===="])
def test_audio_refuses_malformed_base64(text: str) -> None:
    with pytest.raises(ValueError):
        _ = Audio(MULAW_8000, b64=text).raw


@pytest.mark.parametrize("provider_format", [PCM16_16000, PCM16_24000])
def test_transcoded_round_trip_returns_audio_in_the_same_frame(provider_format: AudioFormat) -> None:
    """Caller mu-law 8k -> provider PCM -> caller mu-law 8k, 20 ms frames: a tone onset comes back
    in the frame it was sent in, under 10 ms later (soxr's streaming engine took 3 frames)."""
    to_provider, to_carrier = Transcoder(MULAW_8000, provider_format), Transcoder(provider_format, MULAW_8000)
    signal = np.zeros(8000, dtype=np.int16)
    onset = 4000  # a frame boundary
    signal[onset : onset + 320] = tone(1000, 8000, 0.04, 8000)
    sent = pcm16_to_ulaw(pcm(signal))
    back = bytearray()
    for i in range(0, len(sent), 160):
        provider_audio = to_provider.convert(Audio(MULAW_8000, raw=sent[i : i + 160]))
        assert provider_audio is not None and provider_audio.nbytes == provider_format.bytes_for_ms(20)
        returned = to_carrier.convert(provider_audio)
        assert returned is not None and returned.nbytes == 160  # one whole frame out per frame in
        back += returned.raw
    heard = np.nonzero(np.abs(samples(ulaw_to_pcm16(bytes(back)))) > 3000)[0][0]
    assert 0 <= heard - onset < 80  # 10 ms at 8 kHz


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 8000), (8000, 24000), (22050, 8000)])
def test_reset_forgets_history(in_rate: int, out_rate: int) -> None:
    resampler = StreamResampler(in_rate, out_rate)
    resampler.process(pcm(tone(1000, in_rate, 0.1, 30000)[:-1]))  # odd length: down-sampling phase moved
    resampler.reset()
    after = samples(stream_through(resampler, bytes(6400), 640))
    assert np.max(np.abs(after)) <= 4
    if in_rate % out_rate == 0 or out_rate % in_rate == 0:
        voice = pcm(tone(700, in_rate, 0.1))
        resampler.reset()
        assert resampler.process(voice) == StreamResampler(in_rate, out_rate).process(voice)


# ---------------------------------------------------------------------------------------------
# Transcoder
# ---------------------------------------------------------------------------------------------


def test_passthrough_returns_the_same_object_and_does_no_work() -> None:
    transcoder = Transcoder(MULAW_8000, AudioFormat("mulaw", 8000))
    frame = Audio(MULAW_8000, b64=base64.b64encode(b"\xff" * 160).decode())
    assert transcoder.is_passthrough
    for _ in range(10):
        assert transcoder.convert(frame) is frame
    assert transcoder.frames_converted == 0
    assert not frame.has_raw  # the base64 text was never decoded


def test_mulaw_8k_to_pcm16_16k_and_back() -> None:
    source = tone(300, 8000, 1.0, amp=8000)
    ulaw = pcm16_to_ulaw(pcm(source))
    up = Transcoder(MULAW_8000, PCM16_16000)
    down = Transcoder(PCM16_16000, MULAW_8000)
    assert not up.is_passthrough
    wide: list[bytes] = []
    narrow: list[bytes] = []
    for i in range(0, len(ulaw), 160):
        out = up.convert(Audio(MULAW_8000, b64=base64.b64encode(ulaw[i : i + 160]).decode()))
        if out is None:
            continue
        assert out.fmt == PCM16_16000
        wide.append(out.raw)
        back = down.convert(out)
        if back is not None:
            assert back.fmt == MULAW_8000
            narrow.append(back.raw)
    assert up.frames_converted == 50
    assert abs(len(b"".join(wide)) - 2 * 2 * len(ulaw)) <= 2 * 16000 * 0.04
    back_pcm = samples(ulaw_to_pcm16(b"".join(narrow)))
    assert len(back_pcm) > 7000
    # Level and frequency survive: the resampled-twice tone still has its 300 Hz energy.
    assert abs(rms_db(back_pcm[2000:], 8000)) < 1.0


def test_first_frames_may_yield_none() -> None:
    transcoder = Transcoder(MULAW_8000, PCM16_16000)
    first = transcoder.convert(Audio(MULAW_8000, raw=b"\xff" * 160))
    assert first is None or first.fmt == PCM16_16000
    assert transcoder.frames_converted == 1


def test_same_rate_g711_cross_conversion() -> None:
    ulaw = pcm16_to_ulaw(pcm(tone(500, 8000, 0.1)))
    out = Transcoder(MULAW_8000, ALAW_8000).convert(Audio(MULAW_8000, raw=ulaw))
    assert out is not None
    assert out.raw == pcm16_to_alaw(ulaw_to_pcm16(ulaw))


def test_pcm16_split_mid_sample_is_carried_over() -> None:
    data = pcm(tone(700, 24000, 0.5))
    whole = Transcoder(PCM16_24000, PCM16_8000)
    split = Transcoder(PCM16_24000, PCM16_8000)
    expected = b"".join(
        out.raw
        for i in range(0, len(data), 960)
        if (out := whole.convert(Audio(PCM16_24000, raw=data[i : i + 960]))) is not None
    )
    got = b"".join(
        out.raw
        for i in range(0, len(data), 333)  # odd chunk size: every other chunk ends mid-sample
        if (out := split.convert(Audio(PCM16_24000, raw=data[i : i + 333]))) is not None
    )
    n = min(len(expected), len(got))
    assert n > 7000
    assert np.max(np.abs(samples(expected[:n]) - samples(got[:n]))) <= 4


def test_transcoder_rejects_wrong_input_format_and_resets() -> None:
    transcoder = Transcoder(MULAW_8000, PCM16_16000)
    with pytest.raises(ValueError, match="expects"):
        transcoder.convert(Audio(ALAW_8000, raw=b"\xd5" * 160))
    transcoder.convert(Audio(MULAW_8000, raw=pcm16_to_ulaw(pcm(tone(1000, 8000, 0.1, 30000)))))
    transcoder.reset()
    outs = [transcoder.convert(Audio(MULAW_8000, raw=b"\xff" * 160)) for _ in range(10)]
    tail = b"".join(o.raw for o in outs if o is not None)
    assert tail and np.max(np.abs(samples(tail))) <= 4
