"""Agent audio arrives as base64 in four adapters' JSON: it is decoded where the message is parsed.

A malformed chunk then fails that one message (the session skips and counts it, see
``test_provider_socket``) instead of reaching the carrier unchecked in passthrough or breaking the
transcoder later, on the session's own task.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest

from providers.base import MULAW_8000, AudioOut, ProviderEvent, UsageFacts
from providers.bolna.protocol import TwilioDialect, WebDialect
from providers.elevenlabs.protocol import ElevenLabsCodec
from providers.openai.protocol import OpenAICodec

FRAME = bytes(range(160))


class _NoPlayback:
    def played_ms(self, item_id: str) -> int:
        return 0


def _elevenlabs(b64: str) -> Sequence[ProviderEvent]:
    event = ElevenLabsCodec(MULAW_8000, {}, UsageFacts()).decode(
        orjson.dumps({"type": "audio", "audio_event": {"audio_base_64": b64, "event_id": 1}})
    )
    return () if event is None else (event,)


def _openai(b64: str) -> Sequence[ProviderEvent]:
    codec = OpenAICodec("ga", MULAW_8000, {}, "end_call", UsageFacts(), _NoPlayback())
    delta = {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": b64}
    return codec.decode(orjson.dumps(delta))


def _bolna_twilio(b64: str) -> Sequence[ProviderEvent]:
    dialect = TwilioDialect("MZ1", "CA1", {})
    return dialect.decode(orjson.dumps({"event": "media", "media": {"payload": b64}}))


def _bolna_web(b64: str) -> Sequence[ProviderEvent]:
    dialect = WebDialect(8000, 8000, {})
    return dialect.decode(orjson.dumps({"type": "audio", "data": b64}))


DECODERS: dict[str, Callable[[str], Sequence[Any]]] = {
    "elevenlabs": _elevenlabs,
    "openai": _openai,
    "bolna-twilio": _bolna_twilio,
    "bolna-web": _bolna_web,
}


@pytest.mark.parametrize("decode", DECODERS.values(), ids=DECODERS.keys())
def test_agent_audio_keeps_both_forms(decode: Callable[[str], Sequence[Any]]) -> None:
    text = base64.b64encode(FRAME).decode()
    (event,) = decode(text)
    assert isinstance(event, AudioOut)
    assert event.audio.b64 == text  # passthrough forwards the provider's own text, not a re-encoding
    assert event.audio.has_raw and event.audio.raw == FRAME


@pytest.mark.parametrize("text", ["abc", "ab!d", "AAAA====", "ab=c"])
@pytest.mark.parametrize("decode", DECODERS.values(), ids=DECODERS.keys())
def test_malformed_agent_audio_fails_the_message(decode: Callable[[str], Sequence[Any]], text: str) -> None:
    with pytest.raises(ValueError):
        decode(text)
