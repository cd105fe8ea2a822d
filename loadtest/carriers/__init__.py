"""Protocol-faithful fake Twilio and Telnyx carriers that place real-time calls over the network."""

from loadtest.audio import PcmClip, ToneBursts
from loadtest.carriers.call import place_call
from loadtest.carriers.markup import MarkupError, Refusal, StreamTarget, parse_answer
from loadtest.carriers.plan import CallPlan, CallResult, Credentials
from loadtest.carriers.telnyx_api import TelnyxApi

__all__ = [
    "CallPlan",
    "CallResult",
    "Credentials",
    "MarkupError",
    "PcmClip",
    "Refusal",
    "StreamTarget",
    "TelnyxApi",
    "ToneBursts",
    "parse_answer",
    "place_call",
]
