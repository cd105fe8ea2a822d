"""Hot-path micro-benchmark for the ElevenLabs, Deepgram and OpenAI codecs (CPU only, no sockets).

encode = building the caller-audio message from a carrier frame (20 ms μ-law, arriving as base64);
decode = parsing one agent-audio message into an ``AudioOut``. Prints frames per CPU-second.
Run: ``.venv/bin/python tests/bench/bench_provider_codecs_a.py``
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable

import orjson

from providers.base import MULAW_8000, Audio, UsageFacts
from providers.deepgram.protocol import DeepgramCodec
from providers.elevenlabs.protocol import ElevenLabsCodec, user_audio_message
from providers.openai.protocol import OpenAICodec, append_message

N = 200_000
FRAME = os.urandom(160)  # 20 ms of μ-law at 8 kHz
B64 = base64.b64encode(FRAME).decode()


class _NoPlayback:
    def played_ms(self, item_id: str) -> int:
        return 0


def measure(fn: Callable[[], object]) -> float:
    for _ in range(1000):
        fn()
    start = time.process_time()
    for _ in range(N):
        fn()
    return N / (time.process_time() - start)


def main() -> None:
    el = ElevenLabsCodec(MULAW_8000, {}, UsageFacts())
    el_msg = orjson.dumps({"type": "audio", "audio_event": {"audio_base_64": B64, "event_id": 7}}).decode()
    dg = DeepgramCodec(MULAW_8000, {}, "end_call", UsageFacts())
    oa = OpenAICodec("ga", MULAW_8000, {}, "end_call", UsageFacts(), _NoPlayback())
    delta = {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": B64}
    oa_msg = orjson.dumps(delta).decode()

    def el_encode() -> str:
        return user_audio_message(Audio(MULAW_8000, b64=B64).b64)

    def oa_encode() -> str:
        return append_message(Audio(MULAW_8000, b64=B64).b64)

    cases: list[tuple[str, Callable[[], object]]] = [
        ("elevenlabs encode (b64 passthrough → user_audio_chunk)", el_encode),
        ("elevenlabs decode (audio event → AudioOut)", lambda: el.decode(el_msg)),
        ("deepgram encode (carrier b64 → binary frame bytes)", lambda: Audio(MULAW_8000, b64=B64).raw),
        ("deepgram decode (binary frame → AudioOut)", lambda: dg.audio(FRAME)),
        ("openai encode (b64 passthrough → input_audio_buffer.append)", oa_encode),
        ("openai decode (output_audio.delta → AudioOut)", lambda: oa.decode(oa_msg)),
    ]
    print(f"{N} frames of 20 ms μ-law per case; load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for name, fn in cases:
        rate = measure(fn)
        print(f"{name:62s} {rate / 1e6:6.2f} M frames/s  ({1e9 / rate:7.0f} ns/frame)")


if __name__ == "__main__":
    main()
