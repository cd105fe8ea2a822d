"""Per-frame CPU of the gateway's own hot path, without sockets: carrier JSON in → session → echo →
session → carrier JSON out. Separates voicegw's cost from aiohttp's and the kernel's.

Run: .venv/bin/python tests/bench/bench_session.py [--frames 200000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import pstats
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.carriers.twilio import TwilioStream
from gateway.metrics import GatewayStats
from gateway.session import CallSession, ProviderAttempt
from providers.base import MULAW_8000, Audio, AudioFormat, ProviderContext, ProviderSession
from providers.echo import connect as echo_connect

SID = "MZ" + "1" * 32


class NullCarrier:
    out_format: AudioFormat = MULAW_8000

    def __init__(self, codec: TwilioStream) -> None:
        self.codec = codec
        self.sent = 0

    def send_media(self, audio: Audio, mark: str | None = None) -> None:
        self.codec.media_message(audio)
        if mark is not None:
            self.codec.mark_message(mark)
        self.sent += 1

    def send_mark(self, name: str) -> None:
        self.codec.mark_message(name)

    def send_clear(self) -> None:
        self.codec.clear_message()

    async def hangup(self, reason: str) -> None:
        return None


class NullEvents:
    def event(self, call_id: str, event_type: str, data: dict[str, object] | None) -> None:
        return None


async def run(frames: int) -> float:
    codec = TwilioStream()
    codec.receive(orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).decode())
    codec.receive(
        orjson.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": SID,
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": SID,
                    "callSid": "CA" + "0" * 32,
                    "tracks": ["inbound"],
                    "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        ).decode()
    )
    carrier = NullCarrier(codec)

    async def connect(_history: object) -> ProviderSession:
        return await echo_connect(ProviderContext(call_id="bench", provider="echo", http=None))  # type: ignore[arg-type]

    session = CallSession(
        call_id="bench",
        carrier=carrier,
        carrier_in_format=MULAW_8000,
        attempts=[ProviderAttempt("echo", "bench", connect)],
        events=NullEvents(),
        stats=GatewayStats(),
        connect_deadline_s=5.0,
    )
    session.start()
    while session.provider is None:  # noqa: ASYNC110 - a benchmark spins the loop on purpose
        await asyncio.sleep(0)
    payload = base64.b64encode(bytes(range(256))[:160]).decode()
    messages = [
        orjson.dumps(
            {
                "event": "media",
                "sequenceNumber": str(n + 2),
                "streamSid": SID,
                "media": {
                    "track": "inbound",
                    "chunk": str(n + 1),
                    "timestamp": str(n * 20),
                    "payload": payload,
                },
            }
        ).decode()
        for n in range(1000)
    ]
    t0 = time.process_time()
    for n in range(frames):
        event = codec.receive(messages[n % 1000])
        pending = session.on_media(event.audio)  # type: ignore[union-attr]
        if pending is not None:
            await pending
        if n % 8 == 7:
            await asyncio.sleep(0)  # let the provider task pump what echo produced
    while carrier.sent < frames:  # noqa: ASYNC110
        await asyncio.sleep(0)
    elapsed = time.process_time() - t0
    session.request_end("completed", "bench")
    await session.wait_closed()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--profile", action="store_true")
    a = p.parse_args()
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        elapsed = asyncio.run(run(a.frames))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    else:
        elapsed = asyncio.run(run(a.frames))
    per = elapsed / a.frames * 1e6
    print(
        f"{a.frames} frames: {per:.2f} µs CPU per frame round trip (in → echo → out), "
        f"{1e6 / per / 50:.0f} calls per core at 50 frames/s before sockets"
    )


if __name__ == "__main__":
    main()
