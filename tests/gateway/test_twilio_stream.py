"""TwilioStream: every documented frame, every bad input, and the exact outbound shapes."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio import pcm16_to_alaw
from gateway.carriers.base import (
    CLOSE_BAD_PAYLOAD,
    CLOSE_MALFORMED,
    CLOSE_OUT_OF_ORDER,
    CLOSE_UNKNOWN_EVENT,
    CLOSE_UNSUPPORTED_FORMAT,
    CLOSE_WRONG_STREAM,
    MAX_CLOSE_REASON_BYTES,
    CarrierStream,
    Connected,
    Dtmf,
    MarkEcho,
    Media,
    ProtocolViolation,
    Start,
    Stop,
)
from gateway.carriers.twilio import TwilioStream
from providers.base import ALAW_8000, MULAW_8000, Audio

SID = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCOUNT = "AC" + "3" * 32
SILENCE_B64 = base64.b64encode(b"\xff" * 160).decode()


def dumps(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode()


def connected() -> str:
    return dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})


def start(**overrides: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": SID,
            "callSid": CALL,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {
                "call_id": "c-1",
                "from_number": "+15551230000",
                "to_number": "+15559870000",
            },
        },
        "streamSid": SID,
    }
    msg["start"].update(overrides)
    return msg


def media(payload: Any = SILENCE_B64, sid: Any = SID, **fields: Any) -> str:
    body = {"track": "inbound", "chunk": "2", "timestamp": "20", "payload": payload, **fields}
    msg = {"event": "media", "sequenceNumber": "3", "media": body, "streamSid": sid}
    if sid is None:
        del msg["streamSid"]
    return dumps(msg)


def started() -> TwilioStream:
    stream = TwilioStream()
    assert isinstance(stream.receive(connected()), Connected)
    stream.receive(dumps(start()))
    return stream


def violation(stream: TwilioStream, text: str) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        stream.receive(text)
    return info.value


# ---------------------------------------------------------------------------------------------
# The happy path, frame by frame, with the reference's example frames
# ---------------------------------------------------------------------------------------------


def test_full_sequence_from_the_reference() -> None:
    stream: CarrierStream = TwilioStream()
    assert isinstance(stream.receive(connected()), Connected)
    event = stream.receive(dumps(start()))
    assert event == Start(
        stream_id=SID,
        call_ref=CALL,
        custom_parameters={"call_id": "c-1", "from_number": "+15551230000", "to_number": "+15559870000"},
        media_format=MULAW_8000,
        account_id=ACCOUNT,
        from_number="+15551230000",
        to_number="+15559870000",
    )
    assert (stream.stream_id, stream.call_ref, stream.media_format) == (SID, CALL, MULAW_8000)

    frame = stream.receive(media())
    assert isinstance(frame, Media)
    assert (frame.chunk, frame.timestamp_ms) == (None, None)  # one TCP stream: its order is the order
    assert frame.audio.fmt == MULAW_8000
    assert frame.audio.b64 is not None and frame.audio.raw == b"\xff" * 160
    assert frame.audio.b64 == SILENCE_B64

    dtmf = {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
    assert stream.receive(dumps(dtmf)) == Dtmf("1")
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}}
    assert stream.receive(dumps(mark)) == MarkEcho("my label")
    stop = {
        "event": "stop",
        "sequenceNumber": "5",
        "stop": {"accountSid": ACCOUNT, "callSid": CALL},
        "streamSid": SID,
    }
    assert stream.receive(dumps(stop)) == Stop()


def test_passthrough_payload_is_the_carrier_string_itself() -> None:
    stream = started()
    text = media()
    frame = stream.receive(text)
    assert isinstance(frame, Media)
    outbound = stream.media_message(frame.audio)
    assert orjson.loads(outbound)["media"]["payload"] == SILENCE_B64


def test_connected_is_optional() -> None:
    stream = TwilioStream()
    assert isinstance(stream.receive(dumps(start())), Start)
    assert isinstance(stream.receive(media()), Media)


def test_missing_custom_parameters_and_counters_are_tolerated() -> None:
    msg = start()
    del msg["start"]["customParameters"]
    stream = TwilioStream()
    event = stream.receive(dumps(msg))
    assert isinstance(event, Start)
    assert (event.custom_parameters, event.from_number, event.to_number) == ({}, "", "")
    bare = dumps({"event": "media", "media": {"payload": SILENCE_B64}, "streamSid": SID})
    frame = stream.receive(bare)
    assert isinstance(frame, Media) and frame.chunk is None and frame.timestamp_ms is None


@pytest.mark.parametrize("counters", [{"chunk": 7, "timestamp": 140}, {"chunk": "x1", "timestamp": True}])
def test_counters_are_not_read(counters: dict[str, Any]) -> None:
    """Nothing uses them, and a live call is not worth ending over one."""
    frame = started().receive(media(**counters))
    assert isinstance(frame, Media) and (frame.chunk, frame.timestamp_ms) == (None, None)


# ---------------------------------------------------------------------------------------------
# Every kind of bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "not json at all",
        "\x00\x01\x02binary-as-text",
        '{"event": "media"',  # truncated
        "[1, 2, 3]",
        '"media"',
        "null",
    ],
)
def test_malformed_frames(text: str) -> None:
    assert violation(started(), text).close_code == CLOSE_MALFORMED


@pytest.mark.parametrize(
    "msg",
    [
        {"streamSid": SID},  # no event
        {"event": 5, "streamSid": SID},
        {"event": "media", "streamSid": SID},  # no media object
        {"event": "media", "streamSid": SID, "media": "x"},
        {"event": "media", "streamSid": SID, "media": {"payload": 12}},
        {"event": "media", "streamSid": SID, "media": {"track": "outbound", "payload": SILENCE_B64}},
        {"event": "media", "media": {"payload": SILENCE_B64}},  # streamSid missing
        {"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "x"}},
        {"event": "dtmf", "streamSid": SID, "dtmf": {"digit": 1}},
        {"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "12"}},
        {"event": "mark", "streamSid": SID, "mark": {}},
        {"event": "mark", "streamSid": SID},
    ],
)
def test_missing_or_wrong_typed_fields(msg: dict[str, Any]) -> None:
    assert violation(started(), dumps(msg)).close_code == CLOSE_MALFORMED


def test_unknown_event() -> None:
    err = violation(started(), dumps({"event": "hello", "streamSid": SID}))
    assert err.close_code == CLOSE_UNKNOWN_EVENT
    assert "hello" in err.reason


@pytest.mark.parametrize(
    "text",
    [
        media(),
        dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "1"}}),
        dumps({"event": "mark", "streamSid": SID, "mark": {"name": "m"}}),
        dumps({"event": "stop", "streamSid": SID, "stop": {}}),
    ],
)
def test_frames_before_start(text: str) -> None:
    stream = TwilioStream()
    stream.receive(connected())
    assert violation(stream, text).close_code == CLOSE_OUT_OF_ORDER


def test_second_start_second_connected_and_frames_after_stop() -> None:
    stream = started()
    assert violation(stream, dumps(start())).close_code == CLOSE_OUT_OF_ORDER
    assert violation(stream, connected()).close_code == CLOSE_OUT_OF_ORDER
    twice = TwilioStream()
    twice.receive(connected())
    assert violation(twice, connected()).close_code == CLOSE_OUT_OF_ORDER
    stream.receive(dumps({"event": "stop", "streamSid": SID, "stop": {}}))
    err = violation(stream, media())
    assert (err.close_code, err.reason) == (CLOSE_OUT_OF_ORDER, "media after stop")


def test_wrong_stream_sid() -> None:
    assert violation(started(), media(sid="MZ" + "9" * 32)).close_code == CLOSE_WRONG_STREAM
    mismatch = start()
    mismatch["streamSid"] = "MZother"
    assert violation(TwilioStream(), dumps(mismatch)).close_code == CLOSE_WRONG_STREAM


@pytest.mark.parametrize(
    "payload",
    [
        "",  # empty
        "////",
        "abc",  # not a multiple of 4
        "ab=c",  # padding in the middle
        "=abc",
        "ab c",
        "ab\nc",
        "abcd=",
        "ab!d",
        "ééé=",
        "abcd====",
    ],
)
def test_invalid_base64(payload: str) -> None:
    if payload == "////":  # a valid control: 3 bytes of mu-law are 3 whole samples
        assert isinstance(started().receive(media(payload)), Media)
        return
    assert violation(started(), media(payload)).close_code == CLOSE_BAD_PAYLOAD


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        (
            {"mediaFormat": {"encoding": "audio/x-alaw", "sampleRate": 8000, "channels": 1}},
            CLOSE_UNSUPPORTED_FORMAT,
        ),
        (
            {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1}},
            CLOSE_UNSUPPORTED_FORMAT,
        ),
        (
            {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2}},
            CLOSE_UNSUPPORTED_FORMAT,
        ),
        ({"mediaFormat": None}, CLOSE_MALFORMED),
        ({"callSid": None}, CLOSE_MALFORMED),
        ({"callSid": ""}, CLOSE_MALFORMED),
        ({"accountSid": 7}, CLOSE_MALFORMED),
        ({"streamSid": None}, CLOSE_MALFORMED),
        ({"customParameters": {"a": 1}}, CLOSE_MALFORMED),
        ({"customParameters": ["a"]}, CLOSE_MALFORMED),
    ],
)
def test_bad_start(overrides: dict[str, Any], code: int) -> None:
    assert violation(TwilioStream(), dumps(start(**overrides))).close_code == code


def test_start_without_streamsid_at_top_level() -> None:
    msg = start()
    del msg["streamSid"]
    assert violation(TwilioStream(), dumps(msg)).close_code == CLOSE_MALFORMED


def test_close_reason_is_bounded_and_clipped() -> None:
    err = violation(started(), dumps({"event": "x" * 500, "streamSid": SID}))
    assert len(err.reason.encode()) <= MAX_CLOSE_REASON_BYTES
    assert len(err.reason) < 60
    long = ProtocolViolation(CLOSE_MALFORMED, "é" * 200)
    assert len(long.reason.encode()) <= MAX_CLOSE_REASON_BYTES
    assert str(long).startswith("4400 ")


# ---------------------------------------------------------------------------------------------
# Outbound: the reference's exact shapes and nothing more
# ---------------------------------------------------------------------------------------------


def test_outbound_shapes_are_exact() -> None:
    stream = started()
    audio = Audio(MULAW_8000, raw=b"\x7f\x00\xff")
    assert orjson.loads(stream.media_message(audio)) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(b"\x7f\x00\xff").decode()},
    }
    assert (
        stream.mark_message("utt-42")
        == f'{{"event":"mark","streamSid":"{SID}","mark":{{"name":"utt-42"}}}}'.encode()
    )
    assert stream.clear_message() == f'{{"event":"clear","streamSid":"{SID}"}}'.encode()


@pytest.mark.parametrize("sid", [SID, 'MZ"quoted\\back', "MZ\u00e9\n\u2028"])
def test_media_message_is_the_bytes_orjson_would_give(sid: str) -> None:
    """The media message is put together from a head made at start, not dumped per frame: it must
    still be exactly the JSON of the dict, whatever the stream SID needs escaped."""
    stream = TwilioStream()
    stream.receive(connected())
    stream.receive(dumps(start(streamSid=sid) | {"streamSid": sid}))
    audio = Audio(MULAW_8000, raw=bytes(range(160)))
    expected = {
        "event": "media",
        "streamSid": sid,
        "media": {"payload": base64.b64encode(bytes(range(160))).decode()},
    }
    assert stream.media_message(audio) == orjson.dumps(expected)


def test_outbound_escapes_mark_names() -> None:
    stream = started()
    assert orjson.loads(stream.mark_message('a"b\\c'))["mark"]["name"] == 'a"b\\c'


def test_outbound_needs_start_and_mulaw() -> None:
    with pytest.raises(RuntimeError):
        TwilioStream().clear_message()
    with pytest.raises(RuntimeError):
        TwilioStream().media_message(Audio(MULAW_8000, raw=bytes(160)))
    with pytest.raises(ValueError, match="mulaw"):
        started().media_message(Audio(ALAW_8000, raw=pcm16_to_alaw(bytes(320))))


# ---------------------------------------------------------------------------------------------
# Fuzz: nothing a carrier sends may escape as anything but ProtocolViolation
# ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.sampled_from([SID, SILENCE_B64]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
frames = st.fixed_dictionaries(
    {"event": st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", "error"])},
    optional={
        "streamSid": st.sampled_from([SID, "MZx", 3]),
        "start": json_values,
        "media": st.fixed_dictionaries({}, optional={"payload": json_values, "chunk": json_values}),
        "dtmf": json_values,
        "mark": json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(st.lists(frames, max_size=6))
def test_fuzzed_frame_sequences_only_raise_protocol_violation(sequence: list[dict[str, Any]]) -> None:
    stream = started()
    for msg in sequence:
        try:
            stream.receive(dumps(msg))
        except ProtocolViolation as err:
            assert len(err.reason.encode()) <= MAX_CLOSE_REASON_BYTES


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=64))
def test_fuzzed_text_only_raises_protocol_violation(text: str) -> None:
    try:
        TwilioStream().receive(text)
    except ProtocolViolation:
        pass
