"""CPU cost of the Retell / Vapi / Bolna adapters' per-frame hot path (encode and decode).

Runs each adapter session's real ``send_audio_nowait`` (caller frame → wire message) and its real
message handler (wire message → events) against a null socket, so the figures are codec CPU
only: no network, no event-loop I/O. Frames are 20 ms μ-law (Twilio's size) unless noted.

    .venv/bin/python tests/bench/bench_provider_codecs_b.py [--frames N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import orjson

from providers.base import MULAW_8000, PCM16_16000, PCM16_24000, Audio
from providers.bolna import protocol as bolna_protocol
from providers.bolna.client import BolnaSession
from providers.retell.client import RetellSession
from providers.vapi.client import VapiSession


class NullSocket:
    """Accepts sends and discards them: isolates adapter CPU from socket I/O."""

    closed = False

    def send_binary(self, data: bytes, *, droppable: bool = False) -> bool:
        return True

    def send_text(self, text: str | bytes, *, droppable: bool = False) -> bool:
        return True


def rate(label: str, n: int, step: Callable[[], Any]) -> None:
    for _ in range(min(n, 1000)):  # warm-up
        step()
    start = time.process_time()
    for _ in range(n):
        step()
    cpu = time.process_time() - start
    print(f"{label:<52} {n / cpu:>12,.0f} frames/s   {cpu / n * 1e6:7.2f} µs/frame")


async def main(frames: int) -> None:
    ws: Any = NullSocket()
    mulaw = bytes(range(160))  # 20 ms
    mulaw_b64 = base64.b64encode(mulaw).decode()
    pcm16_in = bytes(640)  # 20 ms at 16 kHz
    pcm24_out_b64 = base64.b64encode(bytes(960)).decode()  # 20 ms at 24 kHz

    retell = RetellSession(ws, MULAW_8000, "call")
    rate(
        "retell  encode (binary μ-law, carrier b64 in)",
        frames,
        lambda: retell.send_audio_nowait(Audio(MULAW_8000, b64=mulaw_b64)),
    )
    rate(
        "retell  encode (binary μ-law, raw in)",
        frames,
        lambda: retell.send_audio_nowait(Audio(MULAW_8000, raw=mulaw)),
    )

    def retell_decode() -> None:
        _ = retell._on_binary(mulaw)[0].audio.b64  # type: ignore[union-attr]  # the carrier wants base64

    rate("retell  decode (binary → AudioOut → b64)", frames, retell_decode)
    rate("retell  decode (text 'clear')", frames, lambda: retell._on_text(b"clear"))

    vapi = VapiSession(ws, MULAW_8000, "call", {})
    rate(
        "vapi    encode (binary μ-law, carrier b64 in)",
        frames,
        lambda: vapi.send_audio_nowait(Audio(MULAW_8000, b64=mulaw_b64)),
    )

    def vapi_decode() -> None:
        _ = vapi._on_binary(mulaw)[0].audio.b64  # type: ignore[union-attr]

    rate("vapi    decode (binary → AudioOut → b64)", frames, vapi_decode)
    transcript = orjson.dumps(
        {"type": "transcript", "role": "assistant", "transcriptType": "partial", "transcript": "one moment"}
    )
    rate("vapi    decode (JSON transcript)", frames, lambda: vapi._on_text(transcript))

    twilio = BolnaSession(ws, bolna_protocol.TwilioDialect("MZ1", "CA1", {}))
    rate(
        "bolna/twilio encode (media JSON, b64 reused)",
        frames,
        lambda: twilio.send_audio_nowait(Audio(MULAW_8000, b64=mulaw_b64)),
    )
    media = orjson.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": mulaw_b64}})

    def twilio_decode() -> None:
        _ = twilio._on_text(media)[0].audio.b64  # type: ignore[union-attr]

    rate("bolna/twilio decode (media JSON → b64 reused)", frames, twilio_decode)
    mark = orjson.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "3f2a"}})
    rate("bolna/twilio decode (mark JSON)", frames, lambda: twilio._on_text(mark))
    rate("bolna/twilio on_mark echo", frames, lambda: twilio._send_str(twilio.codec.mark("3f2a")))

    web = BolnaSession(ws, bolna_protocol.WebDialect(16000, 24000, {}))
    rate(
        "bolna/web encode (PCM16 16k raw → b64 JSON)",
        frames,
        lambda: web.send_audio_nowait(Audio(PCM16_16000, raw=pcm16_in)),
    )
    audio_msg = orjson.dumps({"type": "audio", "data": pcm24_out_b64})

    def web_decode() -> None:
        _ = web._on_text(audio_msg)[0].audio.raw  # type: ignore[union-attr]

    rate("bolna/web decode (audio JSON → PCM16 24k raw)", frames, web_decode)
    assert web.output_format == PCM16_24000


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().frames))
