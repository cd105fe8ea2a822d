"""Per-frame cost of the carrier audio path (run: .venv/bin/python tests/bench/bench_codecs.py).

Each figure is one 20 ms frame through the named steps, base64 included, on one core. A call
needs 50 frames/s in each direction, so "calls/core" = frames/s / 50 for that direction alone.
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from collections.abc import Callable

import numpy as np
import orjson

from gateway.audio import StreamResampler, Transcoder, pcm16_to_ulaw, ulaw_to_pcm16
from gateway.carriers.twilio import TwilioStream
from providers.base import MULAW_8000, PCM16_16000, PCM16_24000, Audio

SID = "MZ" + "0" * 32


def _tone(rate: int, seconds: float) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def _started_stream() -> TwilioStream:
    stream = TwilioStream()
    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": SID,
        "start": {
            "streamSid": SID,
            "callSid": "CA" + "0" * 32,
            "accountSid": "AC" + "0" * 32,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }
    stream.receive(orjson.dumps(start).decode())
    return stream


def _twilio_frames(n: int) -> list[str]:
    ulaw = pcm16_to_ulaw(_tone(8000, n * 0.02))
    return [
        orjson.dumps(
            {
                "event": "media",
                "sequenceNumber": str(i + 2),
                "media": {
                    "track": "inbound",
                    "chunk": str(i + 1),
                    "timestamp": str(i * 20),
                    "payload": base64.b64encode(ulaw[i * 160 : (i + 1) * 160]).decode(),
                },
                "streamSid": SID,
            }
        ).decode()
        for i in range(n)
    ]


def _provider_frames(fmt_rate: int, n: int) -> list[str]:
    pcm = _tone(fmt_rate, n * 0.02)
    size = fmt_rate // 50 * 2
    return [base64.b64encode(pcm[i * size : (i + 1) * size]).decode() for i in range(n)]


def _measure(name: str, n: int, step: Callable[[int], object]) -> None:
    for i in range(min(n, 200)):  # warm-up
        step(i)
    t0 = time.perf_counter()
    for i in range(n):
        step(i)
    elapsed = time.perf_counter() - t0
    fps = n / elapsed
    print(
        f"{name:<58} {fps:>10,.0f} frames/s {elapsed / n * 1e6:>8.1f} us/frame {fps / 50:>8,.0f} calls/core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=20000)
    n = parser.parse_args().frames
    load = os.getloadavg()
    print(
        f"{n} frames per case; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs"
    )

    twilio_in = _twilio_frames(n)
    up16 = _provider_frames(16000, n)
    up24 = _provider_frames(24000, n)
    raw_ulaw = [base64.b64decode(orjson.loads(f)["media"]["payload"]) for f in twilio_in[:50]]
    raw_pcm16 = [base64.b64decode(f) for f in up16[:50]]

    _measure("ulaw_to_pcm16 (160 B)", n, lambda i: ulaw_to_pcm16(raw_ulaw[i % 50]))
    _measure("pcm16_to_ulaw (320 B)", n, lambda i: pcm16_to_ulaw(raw_pcm16[i % 50][:320]))
    resampler = StreamResampler(8000, 16000)
    pcm8k = [ulaw_to_pcm16(r) for r in raw_ulaw]
    _measure("StreamResampler 8k->16k (20 ms)", n, lambda i: resampler.process(pcm8k[i % 50]))

    stream = _started_stream()
    _measure("Twilio receive (parse + validate + decode)", n, lambda i: stream.receive(twilio_in[i]))

    stream = _started_stream()

    def passthrough(i: int) -> object:
        event = stream.receive(twilio_in[i])
        audio = event.audio  # type: ignore[union-attr]
        return stream.media_message(passthrough_tc.convert(audio))  # type: ignore[arg-type]

    passthrough_tc = Transcoder(MULAW_8000, MULAW_8000)
    _measure("in+out passthrough: receive -> convert -> media_message", n, passthrough)

    stream = _started_stream()
    to_provider = Transcoder(MULAW_8000, PCM16_16000)

    def inbound(i: int) -> object:
        event = stream.receive(twilio_in[i])
        out = to_provider.convert(event.audio)  # type: ignore[union-attr]
        return out.b64 if out is not None else None

    _measure("inbound: Twilio JSON -> mulaw/8k -> pcm16/16k base64", n, inbound)

    stream = _started_stream()
    to_carrier = Transcoder(PCM16_16000, MULAW_8000)

    def outbound16(i: int) -> object:
        out = to_carrier.convert(Audio(PCM16_16000, b64=up16[i]))
        return stream.media_message(out) if out is not None else None

    _measure("outbound: pcm16/16k base64 -> mulaw/8k -> Twilio JSON", n, outbound16)

    to_carrier24 = Transcoder(PCM16_24000, MULAW_8000)

    def outbound24(i: int) -> object:
        out = to_carrier24.convert(Audio(PCM16_24000, b64=up24[i]))
        return stream.media_message(out) if out is not None else None

    _measure("outbound: pcm16/24k base64 -> mulaw/8k -> Twilio JSON", n, outbound24)


if __name__ == "__main__":
    main()
