"""Signatures, TwiML/TeXML parsing and the carrier wire formats, checked against the reference."""

from __future__ import annotations

import base64

import orjson
import pytest

from loadtest.audio import PcmClip, ToneBursts, build_track
from loadtest.carriers.markup import MarkupError, Refusal, StreamTarget, parse_answer
from loadtest.carriers.signing import telnyx_private_key, telnyx_signature, twilio_signature
from loadtest.carriers.wire import ClearOut, MarkOut, MediaOut, ProtocolViolation, TelnyxWire, TwilioWire


def test_twilio_signature_official_example() -> None:
    params = {
        "Digits": "1234",
        "To": "+18005551212",
        "From": "+14158675310",
        "Caller": "+14158675310",
        "CallSid": "CA1234567890ABCDE",
    }
    url = "https://example.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "L/OH5YylLD5NRKLltdqwSvS0BnU="


def test_telnyx_signature_vector() -> None:
    key = telnyx_private_key(base64.b64encode(bytes(range(32))).decode())
    sig = telnyx_signature(key, "1700000000", b'{"data":{"event_type":"call.initiated"}}')
    assert sig == "aBuTQ1AtxQGraK6PrtJP6VW9Mu+R2aG6TbxS7lim9/ia8dN94a42JYoTifASA18z3xe+GLlYfveWOuyyKq7OCw=="
    with pytest.raises(ValueError, match="32-byte"):
        telnyx_private_key(base64.b64encode(b"short").decode())


def test_parse_connect_stream() -> None:
    answer = parse_answer(
        '<?xml version="1.0"?><Response><Connect><Stream url="wss://gw/telnyx/media" '
        'bidirectionalMode="rtp" bidirectionalCodec="PCMU"><Parameter name="call_id" value="c1"/>'
        '<Parameter name="token" value="a&amp;b"/></Stream></Connect></Response>'
    )
    assert answer == StreamTarget(
        "wss://gw/telnyx/media",
        {"call_id": "c1", "token": "a&b"},
        {"bidirectionalMode": "rtp", "bidirectionalCodec": "PCMU"},
    )


def test_parse_refusal() -> None:
    answer = parse_answer("<Response><Say>Sorry, this number is not in service.</Say><Hangup/></Response>")
    assert answer == Refusal("Sorry, this number is not in service.")


@pytest.mark.parametrize(
    "xml,match",
    [
        ('<Response><Connect><Stream url="wss://gw/m?token=1"/></Connect></Response>', "query string"),
        ('<Response><Start><Stream url="wss://gw/m"/></Start></Response>', "unidirectional"),
        ('<Response><Connect><Stream url="https://gw/m"/></Connect></Response>', "scheme"),
        ("<Respons/>", "expected <Response>"),
        ("not xml", "not XML"),
    ],
)
def test_parse_rejects(xml: str, match: str) -> None:
    with pytest.raises(MarkupError, match=match):
        parse_answer(xml)


def test_twilio_messages_have_documented_shapes() -> None:
    wire = TwilioWire("AC1", "CA1", "MZ1")
    assert orjson.loads(wire.connected()) == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = orjson.loads(wire.start({"call_id": "c"}))
    assert start["sequenceNumber"] == "1" and start["streamSid"] == "MZ1"
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert start["start"]["customParameters"] == {"call_id": "c"}
    m1, m2 = orjson.loads(wire.media(b"//8=")), orjson.loads(wire.media(b"//8="))
    assert m1["media"] == {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "//8="}
    assert (m2["sequenceNumber"], m2["media"]["chunk"], m2["media"]["timestamp"]) == ("3", "2", "20")
    assert orjson.loads(wire.dtmf("5"))["dtmf"] == {"track": "inbound_track", "digit": "5"}
    stop = orjson.loads(wire.stop())
    assert stop["stop"] == {"accountSid": "AC1", "callSid": "CA1"} and stop["sequenceNumber"] == "5"


def test_twilio_parse_is_strict() -> None:
    wire = TwilioWire("AC1", "CA1", "MZ1")
    assert wire.parse('{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}') == MediaOut(
        b"\xff\xff"
    )
    assert wire.parse('{"event":"mark","streamSid":"MZ1","mark":{"name":"x"}}') == MarkOut("x")
    assert wire.parse('{"event":"clear","streamSid":"MZ1"}') == ClearOut()
    bad = [
        '{"event":"media","streamSid":"MZ2","media":{"payload":"//8="}}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"//8=","track":"outbound"}}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"%%"}}',
        '{"event":"media","streamSid":"MZ1","media":{"payload":"UklGRgAA"}}',
        '{"event":"mark","streamSid":"MZ1"}',
        '{"event":"connected","streamSid":"MZ1"}',
        "[1]",
    ]
    for text in bad:
        with pytest.raises(ProtocolViolation):
            wire.parse(text)


def test_telnyx_messages_and_parse() -> None:
    wire = TelnyxWire("v3:x", "sid", "uid", "sess", "+1", "+2", "PCMU", 8000, 8000)
    start = orjson.loads(wire.start({}))
    assert start["stream_id"] == "sid" and start["start"]["call_control_id"] == "v3:x"
    assert start["start"]["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    frame = base64.b64encode(b"\xff" * 160).decode()
    assert wire.parse(f'{{"event":"media","media":{{"payload":"{frame}"}}}}') == MediaOut(b"\xff" * 160)
    with pytest.raises(ProtocolViolation, match="20 ms"):
        wire.parse('{"event":"media","media":{"payload":"//8="}}')
    assert wire.parse('{"event":"clear"}') == ClearOut()
    err = orjson.loads(wire.error("100003", "malformed_frame", "x") or "")
    assert err["error"] == {"title": "malformed_frame", "code": "100003", "detail": "x"}


def test_accepted_media_messages_are_remembered_and_nothing_else() -> None:
    wire = TwilioWire("AC1", "CA1", "MZ1")
    text = b'{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}'
    first = wire.parse(text)
    assert wire.parse(text) is first == MediaOut(b"\xff\xff")
    assert list(wire.known_media) == [text]
    wire.parse(b'{"event":"mark","streamSid":"MZ1","mark":{"name":"x"}}')
    big = b'{"event":"media","streamSid":"MZ1","media":{"payload":"' + b"/" * 2000 + b'"}}'
    wire.parse(big)
    bad = b'{"event":"media","streamSid":"MZ2","media":{"payload":"//8="}}'
    for _ in range(2):  # a violation is reported every time, never remembered
        with pytest.raises(ProtocolViolation):
            wire.parse(bad)
    assert list(wire.known_media) == [text]
    for i in range(40):  # bounded
        wire.parse(b'{"event":"media","streamSid":"MZ1","media":{"payload":"' + b"%04d" % i + b'"}}')
    assert len(wire.known_media) == 16


def test_tracks_play_in_order_loop_or_end_in_silence_and_are_shared() -> None:
    tone = build_track(ToneBursts(first_at_ms=40, period_ms=100, burst_ms=40), "PCMU", 8000)
    frames, wrap = tone.playlist()
    assert [onset for _, onset in frames] == [False, False, True, False, False, False, False]
    assert wrap == 2  # the lead-in plays once, then the 5-frame period repeats
    assert build_track(ToneBursts(first_at_ms=40, period_ms=100, burst_ms=40), "PCMU", 8000) is tone
    clip = PcmClip(b"\x10\x00" * 400, loop=False)  # 50 ms: three frames, the last padded
    frames, wrap = build_track(clip, "PCMU", 8000).playlist()
    assert len(frames) == 4 and wrap == 3  # then silence for ever
    assert base64.b64decode(frames[3][0]) == b"\xff" * 160
    frames, wrap = build_track(PcmClip(b"\x10\x00" * 400), "PCMU", 8000).playlist()
    assert len(frames) == 3 and wrap == 0
