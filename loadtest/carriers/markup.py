"""Parsing the gateway's TwiML/TeXML answer into a stream target or a refusal, as a carrier would."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class MarkupError(ValueError):
    """The answer is not TwiML/TeXML a carrier would accept for a bidirectional stream."""


@dataclass(frozen=True)
class StreamTarget:
    """``<Connect><Stream>``: where to open the media socket and what to put in ``start``."""

    url: str
    parameters: dict[str, str]
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """``<Say>…</Say><Hangup/>`` (or any answer without a stream): the call is not connected."""

    text: str


def parse_answer(xml_text: str) -> StreamTarget | Refusal:
    """Requires ``<Response>``; a ``<Connect><Stream url>`` without query string connects, else refusal."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise MarkupError(f"answer is not XML: {exc}") from exc
    if root.tag != "Response":
        raise MarkupError(f"root element is <{root.tag}>, expected <Response>")
    stream = root.find("./Connect/Stream")
    if stream is None:
        if root.find("./Start/Stream") is not None:
            raise MarkupError("<Start><Stream> is unidirectional; a bidirectional stream needs <Connect>")
        says = [el.text or "" for el in root.iter("Say")]
        return Refusal(" ".join(s.strip() for s in says).strip())
    url = stream.get("url")
    if not url:
        raise MarkupError("<Stream> has no url attribute")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise MarkupError(f"<Stream url> scheme must be ws/wss, got {parts.scheme!r}")
    if parts.query:
        raise MarkupError("<Stream url> must not carry a query string; use <Parameter>")
    params: dict[str, str] = {}
    for p in stream.findall("Parameter"):
        name, value = p.get("name"), p.get("value")
        if name is None or value is None:
            raise MarkupError("<Parameter> needs name and value")
        if len(name) + len(value) >= 500:
            raise MarkupError(f"<Parameter {name}> name+value must be under 500 characters")
        params[name] = value
    attributes = {k: v for k, v in stream.attrib.items() if k != "url"}
    return StreamTarget(url, params, attributes)
