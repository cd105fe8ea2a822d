"""TelnyxStream: codecs chosen by start.media_format, bad input, error frames, outbound shapes."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.audio import Transcoder, pcm16_to_alaw, pcm16_to_ulaw
from gateway.carriers import telnyx as telnyx_codec
from gateway.carriers.base import (
    CLOSE_BAD_PAYLOAD,
    CLOSE_MALFORMED,
    CLOSE_OUT_OF_ORDER,
    CLOSE_UNKNOWN_EVENT,
    CLOSE_UNSUPPORTED_FORMAT,
    CLOSE_WRONG_STREAM,
    CarrierError,
    CarrierStream,
    Connected,
    Dtmf,
    MarkEcho,
    Media,
    ProtocolViolation,
    Start,
    Stop,
)
from gateway.carriers.telnyx import TelnyxStream
from providers.base import ALAW_8000, MULAW_8000, PCM16_8000, PCM16_16000, Audio, AudioFormat

STREAM = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
CCID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"
USER = "3E6F995F-85F7-4705-9741-53B116D28237"


def dumps(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode()


def start(encoding: Any = "PCMU", sample_rate: Any = 8000, **overrides: Any) -> str:
    body: dict[str, Any] = {
        "user_id": USER,
        "call_control_id": CCID,
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": encoding, "sample_rate": sample_rate, "channels": 1},
    }
    body.update(overrides)
    return dumps({"event": "start", "sequence_number": "1", "stream_id": STREAM, "start": body})


def media(raw: bytes = b"\xff" * 160, chunk: str = "2", stream_id: str | None = STREAM, **extra: Any) -> str:
    body = {"track": "inbound", "chunk": chunk, "timestamp": "5", "payload": base64.b64encode(raw).decode()}
    body.update(extra)
    msg: dict[str, Any] = {"event": "media", "sequence_number": "4", "media": body}
    if stream_id is not None:
        msg["stream_id"] = stream_id
    return dumps(msg)


def started(encoding: str = "PCMU", sample_rate: int = 8000) -> TelnyxStream:
    stream = TelnyxStream()
    assert isinstance(stream.receive(dumps({"event": "connected", "version": "1.0.0"})), Connected)
    stream.receive(start(encoding, sample_rate))
    return stream


def violation(stream: TelnyxStream, text: str) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        stream.receive(text)
    return info.value


def test_full_sequence_from_the_reference() -> None:
    stream: CarrierStream = TelnyxStream()
    stream.receive(dumps({"event": "connected", "version": "1.0.0"}))
    assert stream.receive(start()) == Start(
        stream_id=STREAM,
        call_ref=CCID,
        custom_parameters={"customer_id": "customer_123"},
        media_format=MULAW_8000,
        account_id=USER,
        from_number="+13122010094",
        to_number="+13122123456",
    )
    frame = stream.receive(media())
    assert isinstance(frame, Media)
    assert (frame.chunk, frame.timestamp_ms, frame.audio.fmt) == (2, 5, MULAW_8000)
    assert frame.audio.raw == b"\xff" * 160
    dtmf = {
        "event": "dtmf",
        "stream_id": STREAM,
        "occurred_at": "2025-06-05T08:54:19.698408Z",
        "sequence_number": "5",
        "dtmf": {"digit": "#"},
    }
    assert stream.receive(dumps(dtmf)) == Dtmf("#")
    assert stream.receive(dumps({"event": "mark", "mark": {"name": "greeting-end"}})) == MarkEcho(
        "greeting-end"
    )
    stop = {
        "event": "stop",
        "sequence_number": "5",
        "stop": {"user_id": USER, "call_control_id": CCID},
        "stream_id": STREAM,
    }
    assert stream.receive(dumps(stop)) == Stop()


@pytest.mark.parametrize(
    ("encoding", "fmt"),
    [("PCMU", MULAW_8000), ("audio/x-mulaw", MULAW_8000), ("PCMA", ALAW_8000), ("audio/x-alaw", ALAW_8000)],
)
def test_inbound_codec_follows_media_format(encoding: str, fmt: AudioFormat) -> None:
    stream = started(encoding)
    assert stream.media_format == fmt
    frame = stream.receive(media(b"\xd5" * 160))
    assert isinstance(frame, Media) and frame.audio.fmt == fmt


def test_pcma_decodes_as_alaw_not_ulaw() -> None:
    """The 'static on EU calls' bug: PCMA must go through the A-law table."""
    tone = np.round(np.sin(2 * np.pi * 440 * np.arange(160) / 8000) * 8000).astype("<i2").tobytes()
    frame = started("PCMA").receive(media(pcm16_to_alaw(tone)))
    assert isinstance(frame, Media)
    out = Transcoder(frame.audio.fmt, PCM16_8000).convert(frame.audio)
    assert out is not None
    error = np.abs(np.frombuffer(out.raw, "<i2").astype(int) - np.frombuffer(tone, "<i2").astype(int))
    assert error.max() < 300


@pytest.mark.parametrize("rate", [8000, 16000])
def test_l16_is_big_endian_and_converted_to_little_endian(rate: int) -> None:
    stream = started("L16", rate)
    assert stream.media_format == AudioFormat("pcm16", rate)
    samples = np.array([1, -2, 0x0102, -32768, 32767], dtype=np.int16)
    frame = stream.receive(media(samples.astype(">i2").tobytes()))
    assert isinstance(frame, Media)
    assert frame.audio.fmt == AudioFormat("pcm16", rate)
    assert frame.audio.raw == samples.astype("<i2").tobytes()


def test_odd_length_l16_payload() -> None:
    err = violation(started("L16", 16000), media(b"\x00\x01\x02"))
    assert (err.close_code, err.reason) == (CLOSE_BAD_PAYLOAD, "payload is not a whole number of samples")


@pytest.mark.parametrize(
    ("encoding", "rate", "code"),
    [
        ("G722", 16000, CLOSE_UNSUPPORTED_FORMAT),
        ("OPUS", 48000, CLOSE_UNSUPPORTED_FORMAT),
        ("pcmu", 8000, CLOSE_UNSUPPORTED_FORMAT),
        ("PCMU", 16000, CLOSE_UNSUPPORTED_FORMAT),
        ("L16", 11025, CLOSE_UNSUPPORTED_FORMAT),
        (None, 8000, CLOSE_UNSUPPORTED_FORMAT),
        ("PCMU", "8000", CLOSE_MALFORMED),
        ("PCMU", None, CLOSE_MALFORMED),
    ],
)
def test_unsupported_or_malformed_media_format(encoding: Any, rate: Any, code: int) -> None:
    assert violation(TelnyxStream(), start(encoding, rate)).close_code == code


@pytest.mark.parametrize(
    "overrides",
    [{"call_control_id": None}, {"media_format": "PCMU"}, {"custom_parameters": {"a": 1}}, {"from": 5}],
)
def test_bad_start_fields(overrides: dict[str, Any]) -> None:
    assert violation(TelnyxStream(), start(**overrides)).close_code == CLOSE_MALFORMED


def test_start_needs_top_level_stream_id() -> None:
    msg = orjson.loads(start())
    msg["start"]["stream_id"] = msg.pop("stream_id")  # nested instead of top level
    assert violation(TelnyxStream(), dumps(msg)).close_code == CLOSE_MALFORMED


def test_error_frames_become_events_even_before_start() -> None:
    frame = {
        "stream_id": STREAM,
        "event": "error",
        "sequence_number": "6",
        "error": {"title": "rate_limit_reached", "code": "100005", "detail": "Too many requests"},
    }
    assert TelnyxStream().receive(dumps(frame)) == CarrierError(
        "100005", "rate_limit_reached", "Too many requests"
    )
    assert started().receive(dumps({"event": "error", "error": {"code": 100004}})) == CarrierError(
        "100004", "", ""
    )
    assert (
        violation(started(), dumps({"event": "error", "error": {"title": "x"}})).close_code == CLOSE_MALFORMED
    )


def test_out_of_order_chunks_are_forwarded_and_counted() -> None:
    stream = started()
    chunks = ["1", "2", "4", "3", "5", "5"]
    events = [stream.receive(media(chunk=c)) for c in chunks]
    assert [e.chunk for e in events if isinstance(e, Media)] == [1, 2, 4, 3, 5, 5]
    assert stream.late_frames == 2


def test_stream_id_is_checked_when_present_and_tolerated_when_absent() -> None:
    stream = started()
    assert isinstance(stream.receive(media(stream_id=None)), Media)
    assert violation(stream, media(stream_id="other")).close_code == CLOSE_WRONG_STREAM


@pytest.mark.parametrize(
    "text",
    ["", "}{", "\xff\xfe garbage", "[]", "42"],
)
def test_malformed_frames(text: str) -> None:
    assert violation(started(), text).close_code == CLOSE_MALFORMED


def test_order_and_unknown_events() -> None:
    fresh = TelnyxStream()
    assert violation(fresh, media()).close_code == CLOSE_OUT_OF_ORDER
    stream = started()
    assert violation(stream, start()).close_code == CLOSE_OUT_OF_ORDER
    assert violation(stream, dumps({"event": "connected"})).close_code == CLOSE_OUT_OF_ORDER
    assert violation(stream, dumps({"event": "clear"})).close_code == CLOSE_UNKNOWN_EVENT
    assert violation(stream, dumps({"event": None})).close_code == CLOSE_MALFORMED
    stream.receive(dumps({"event": "stop", "stream_id": STREAM, "stop": {}}))
    assert violation(stream, media()).close_code == CLOSE_OUT_OF_ORDER
    assert (
        violation(stream, dumps({"event": "error", "error": {"code": "1"}})).close_code == CLOSE_OUT_OF_ORDER
    )


@pytest.mark.parametrize("payload", ["", "AAA", "AA=A", "AAAA====", "AA AA", "****"])
def test_invalid_base64(payload: str) -> None:
    text = dumps({"event": "media", "stream_id": STREAM, "media": {"payload": payload}})
    assert violation(started(), text).close_code == CLOSE_BAD_PAYLOAD


def test_bad_dtmf_and_mark() -> None:
    assert (
        violation(started(), dumps({"event": "dtmf", "dtmf": {"digit": "E"}})).close_code == CLOSE_MALFORMED
    )
    assert (
        violation(started(), dumps({"event": "mark", "mark": {"name": None}})).close_code == CLOSE_MALFORMED
    )


def test_outbound_shapes_have_no_stream_id() -> None:
    stream = started("PCMA")
    assert stream.outbound_format == MULAW_8000  # our TeXML sets bidirectionalCodec="PCMU"
    ulaw = pcm16_to_ulaw(bytes(320))
    assert stream.media_message(Audio(MULAW_8000, raw=ulaw)) == (
        b'{"event":"media","media":{"payload":"' + base64.b64encode(ulaw) + b'"}}'
    )
    assert stream.mark_message("greeting-end") == b'{"event":"mark","mark":{"name":"greeting-end"}}'
    assert stream.clear_message() == b'{"event":"clear"}'
    with pytest.raises(ValueError, match="PCMU"):
        stream.media_message(Audio(PCM16_16000, raw=bytes(640)))


def test_l16_byte_order_is_one_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telnyx_codec, "L16_BIG_ENDIAN", False)
    little = np.array([1, -2], dtype="<i2").tobytes()
    frame = started("L16", 16000).receive(media(little))
    assert isinstance(frame, Media)
    assert frame.audio.raw == little
    assert frame.audio.b64 == base64.b64encode(little).decode()
