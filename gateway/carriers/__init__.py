"""Carrier side of the gateway: sans-I/O media-stream codecs, TwiML/TeXML, Telnyx REST hang-up.

Each codec (``TwilioStream``, ``TelnyxStream``) turns one text frame into one typed event from
``gateway.carriers.base`` and builds the frames we send back; the aiohttp handler owns the socket.
"""

from gateway.carriers.base import (
    CarrierError,
    CarrierEvent,
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
from gateway.carriers.twilio import TwilioStream

__all__ = [
    "CarrierError",
    "CarrierEvent",
    "CarrierStream",
    "Connected",
    "Dtmf",
    "MarkEcho",
    "Media",
    "ProtocolViolation",
    "Start",
    "Stop",
    "TelnyxStream",
    "TwilioStream",
]
