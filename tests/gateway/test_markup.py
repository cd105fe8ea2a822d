"""TwiML/TeXML: exact documents, escaping that survives a real XML parser, refused input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping

import pytest

from gateway.carriers.markup import (
    texml_connect_stream,
    texml_say_hangup,
    twiml_connect_stream,
    twiml_say_hangup,
)

ConnectBuilder = Callable[[str, Mapping[str, str]], str]

NASTY = "a&b<c>d\"e'f\tg\nh\ri ü 🎧"


def test_twiml_connect_stream_exact() -> None:
    assert twiml_connect_stream(
        "wss://gw.example.com/twilio/media", {"call_id": "c1", "token": "v1.9.a-b_c"}
    ) == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Response><Connect><Stream url="wss://gw.example.com/twilio/media">'
        '<Parameter name="call_id" value="c1"/><Parameter name="token" value="v1.9.a-b_c"/>'
        "</Stream></Connect></Response>"
    )


def test_texml_connect_stream_exact() -> None:
    assert texml_connect_stream("wss://gw.example.com/telnyx/media", {"call_id": "c1"}) == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Response><Connect><Stream url="wss://gw.example.com/telnyx/media"'
        ' bidirectionalMode="rtp" bidirectionalCodec="PCMU">'
        '<Parameter name="call_id" value="c1"/>'
        "</Stream></Connect></Response>"
    )


@pytest.mark.parametrize("build", [twiml_connect_stream, texml_connect_stream])
def test_parameters_survive_a_real_parser(build: ConnectBuilder) -> None:
    doc = build("wss://gw.example.com/media", {"k&1": NASTY, "empty": ""})
    root = ET.fromstring(doc.encode())
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://gw.example.com/media"
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [
        ("k&1", NASTY),
        ("empty", ""),
    ]


def test_url_is_escaped() -> None:
    doc = texml_connect_stream("wss://gw.example.com/media?a=1&b=2", {})
    assert 'url="wss://gw.example.com/media?a=1&amp;b=2"' in doc
    stream = ET.fromstring(doc.encode()).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://gw.example.com/media?a=1&b=2"


@pytest.mark.parametrize("build", [twiml_say_hangup, texml_say_hangup])
def test_say_hangup(build: Callable[[str], str]) -> None:
    assert build("Sorry & goodbye") == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Sorry &amp; goodbye</Say><Hangup/></Response>'
    )
    root = ET.fromstring(build(NASTY).encode())
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root.findtext("Say") == NASTY.replace("\r", "\n")  # XML normalises CR in text


def test_twilio_refuses_query_strings_and_long_parameters() -> None:
    with pytest.raises(ValueError, match="query string"):
        twiml_connect_stream("wss://gw.example.com/media?call=1", {})
    twiml_connect_stream("wss://gw.example.com/media", {"n": "v" * 498})
    with pytest.raises(ValueError, match="under 500"):
        twiml_connect_stream("wss://gw.example.com/media", {"n": "v" * 499})


@pytest.mark.parametrize("build", [twiml_connect_stream, texml_connect_stream])
def test_refused_urls_and_characters(build: ConnectBuilder) -> None:
    with pytest.raises(ValueError, match="wss"):
        build("https://gw.example.com/media", {})
    with pytest.raises(ValueError, match="XML"):
        build("wss://gw.example.com/media", {"a": "nul\x00byte"})
    with pytest.raises(ValueError, match="XML"):
        build("wss://gw.example.com/media", {"a\x1b": "v"})
    assert build("ws://127.0.0.1:8080/media", {}).count("ws://127.0.0.1:8080/media") == 1


def test_say_refuses_control_characters() -> None:
    with pytest.raises(ValueError, match="XML"):
        twiml_say_hangup("bell\x07")
