"""TwiML (Twilio) and TeXML (Telnyx) documents that answer a voice webhook.

Element and attribute names are case sensitive; every value is XML-escaped (a raw ``&`` in a
URL or parameter breaks the carrier's parser and the call). Characters XML 1.0 cannot carry
at all are refused with ``ValueError`` rather than silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

XML_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>'

# Twilio: "The combined length of each <Parameter> name and value attributes must be under 500".
TWILIO_MAX_PARAMETER_CHARS: Final = 499
# Our outbound audio to Telnyx; gateway.carriers.telnyx.TelnyxStream sends exactly this codec.
TEXML_BIDIRECTIONAL_CODEC: Final = "PCMU"

_INVALID_XML_CHARS: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Attribute values are normalised by XML parsers (tabs/newlines become spaces): keep them as refs.
_ATTR_ESCAPES: Final = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_TEXT_ESCAPES: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _checked(value: str, what: str) -> str:
    if _INVALID_XML_CHARS.search(value):
        raise ValueError(f"{what} contains characters XML cannot carry")
    return value


def _attr(value: str, what: str) -> str:
    return '"' + _checked(value, what).translate(_ATTR_ESCAPES) + '"'


def _text(value: str, what: str) -> str:
    return _checked(value, what).translate(_TEXT_ESCAPES)


def _check_ws_url(ws_url: str) -> None:
    # Carriers only dial wss://; ws:// is accepted for local test carriers.
    if urlsplit(ws_url).scheme not in ("wss", "ws"):
        raise ValueError("stream URL must be wss:// (or ws:// for local tests)")


def _parameters(parameters: Mapping[str, str], max_chars: int | None) -> str:
    out = []
    for name, value in parameters.items():
        if max_chars is not None and len(name) + len(value) > max_chars:
            raise ValueError(f"<Parameter> {name!r}: name + value must be under {max_chars + 1} characters")
        out.append(
            f"<Parameter name={_attr(name, 'parameter name')} value={_attr(value, 'parameter value')}/>"
        )
    return "".join(out)


def _say_hangup(text: str) -> str:
    return f"{XML_DECLARATION}<Response><Say>{_text(text, 'text')}</Say><Hangup/></Response>"


def twiml_connect_stream(ws_url: str, parameters: Mapping[str, str]) -> str:
    """``<Connect><Stream>``: bidirectional, holds the call until our server closes the socket."""
    _check_ws_url(ws_url)
    if urlsplit(ws_url).query:
        raise ValueError("Twilio <Stream> URLs cannot carry a query string; use parameters")
    return (
        f"{XML_DECLARATION}<Response><Connect><Stream url={_attr(ws_url, 'URL')}>"
        f"{_parameters(parameters, TWILIO_MAX_PARAMETER_CHARS)}</Stream></Connect></Response>"
    )


def twiml_say_hangup(text: str) -> str:
    """Refusal: say why, then hang up."""
    return _say_hangup(text)


def texml_connect_stream(ws_url: str, parameters: Mapping[str, str]) -> str:
    """``<Connect><Stream>`` in RTP mode: without ``bidirectionalMode="rtp"`` Telnyx drops our audio."""
    _check_ws_url(ws_url)
    return (
        f"{XML_DECLARATION}<Response><Connect><Stream url={_attr(ws_url, 'URL')}"
        f' bidirectionalMode="rtp" bidirectionalCodec="{TEXML_BIDIRECTIONAL_CODEC}">'
        f"{_parameters(parameters, None)}</Stream></Connect></Response>"
    )


def texml_say_hangup(text: str) -> str:
    """Refusal: say why, then hang up."""
    return _say_hangup(text)
