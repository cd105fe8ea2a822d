"""Who may talk to the gateway: carrier webhook signatures and short-lived media-stream tokens.

* Twilio signs webhooks with HMAC-SHA1 over the URL plus the sorted form parameters.
* Telnyx signs webhooks with Ed25519 over ``"{timestamp}|{raw body}"``.
* A media socket proves it belongs to a call we answered with a stream token that our own
  TwiML/TeXML handed out as a ``<Parameter>``; the carrier echoes it in ``start``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

__all__ = [
    "TokenError",
    "mint_stream_token",
    "sign_telnyx",
    "twilio_signature",
    "verify_stream_token",
    "verify_telnyx_signature",
    "verify_twilio_signature",
]

# ---------------------------------------------------------------------------------------------
# Twilio: X-Twilio-Signature
# ---------------------------------------------------------------------------------------------

_DEFAULT_PORTS: Final = {"https": "443", "wss": "443", "http": "80", "ws": "80"}


def _param_values(params: Mapping[str, str | list[str]], name: str) -> Iterable[str]:
    value = params[name]
    if isinstance(value, list):
        return value
    getall = getattr(params, "getall", None)  # aiohttp/multidict: every value of a repeated name
    return getall(name) if getall is not None else (value,)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str | list[str]]) -> str:
    """Base64 HMAC-SHA1 of ``url`` + each ``name`` + ``value``, names sorted case-sensitively.

    A repeated name contributes each distinct value in sorted order, as twilio-python does.
    """
    pieces = [url]
    for name in sorted(set(params)):
        for value in sorted(set(_param_values(params, name))):
            pieces.append(name)
            pieces.append(value)
    digest = hmac.new(auth_token.encode(), "".join(pieces).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """``url`` as given, without any port, and with the scheme's default port.

    Twilio is inconsistent about ports (HTTPS voice callbacks are signed without one, other
    requests with one), so like twilio-python we accept either form. Credentials in the URL
    are never part of the signed string.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):  # IPv6 literal: [::1]:8443
        end = netloc.find("]") + 1
        host, port = netloc[:end], netloc[end + 1 :]
    else:
        host, _, port = netloc.partition(":")
    port = port or _DEFAULT_PORTS.get(parts.scheme.lower(), "")
    variants = [url, urlunsplit(parts._replace(netloc=host))]
    if port:
        variants.append(urlunsplit(parts._replace(netloc=f"{host}:{port}")))
    return list(dict.fromkeys(variants))


def verify_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str | list[str]], signature: str
) -> bool:
    """Constant-time check of ``X-Twilio-Signature`` for the public ``url`` Twilio requested."""
    if not auth_token or not signature:
        return False
    given = signature.strip().encode("utf-8", "replace")
    ok = False
    for candidate in _url_variants(url):
        ok |= hmac.compare_digest(twilio_signature(auth_token, candidate, params).encode(), given)
    return ok


# ---------------------------------------------------------------------------------------------
# Telnyx: telnyx-signature-ed25519 + telnyx-timestamp
# ---------------------------------------------------------------------------------------------


def _telnyx_message(timestamp: str, body: bytes) -> bytes:
    return f"{timestamp}|".encode() + body


def verify_telnyx_signature(
    public_key_b64: str,
    timestamp: str,
    body: bytes,
    signature_b64: str,
    now_s: float,
    tolerance_s: float = 300,
) -> bool:
    """Ed25519 check over ``"{timestamp}|"`` + the raw body; stale timestamps are refused."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        log.debug("telnyx signature: malformed timestamp")
        return False
    if abs(now_s - int(timestamp)) > tolerance_s:
        log.debug("telnyx signature: timestamp outside the %s s tolerance", tolerance_s)
        return False
    try:
        key = base64.b64decode(public_key_b64, validate=True)
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        log.debug("telnyx signature: key or signature is not base64")
        return False
    if len(key) != 32 or len(signature) != 64:
        log.debug("telnyx signature: key or signature has the wrong length")
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, _telnyx_message(timestamp, body))
    except InvalidSignature:
        return False
    return True


def sign_telnyx(private_seed: bytes, timestamp: str, body: bytes) -> str:
    """Sign as Telnyx would (for fake carriers and tests); ``private_seed`` is 32 raw bytes."""
    key = Ed25519PrivateKey.from_private_bytes(private_seed)
    return base64.b64encode(key.sign(_telnyx_message(timestamp, body))).decode("ascii")


# ---------------------------------------------------------------------------------------------
# Media-stream tokens
# ---------------------------------------------------------------------------------------------
#
# Format: "v1.<expiry unix s>.<call tag>.<mac>", all URL-safe, ~66 characters.
#   call tag = b64url(sha256(call_id)[:6])  lets us tell a token of another call ("wrong_call")
#              from a forged one without carrying the call id itself;
#   mac      = b64url(HMAC-SHA256(secret, "v1|carrier|call_id|expiry")), binding all three.
# The call id travels next to the token as its own <Parameter>.

TokenFailure = Literal["missing", "malformed", "bad_signature", "expired", "wrong_call"]

_TOKEN_VERSION: Final = "v1"
_MIN_SECRET_BYTES: Final = 16
_MAX_TOKEN_CHARS: Final = 128
_TOKEN_SHAPE: Final = re.compile(_TOKEN_VERSION + r"\.([0-9]{1,12})\.([A-Za-z0-9_-]{8})\.([A-Za-z0-9_-]{43})")


class TokenError(Exception):
    """A stream token was refused; ``reason`` says why (safe to log: it contains no secret)."""

    def __init__(self, reason: TokenFailure) -> None:
        super().__init__(reason)
        self.reason: TokenFailure = reason

    def __str__(self) -> str:
        return self.reason


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _call_tag(call_id: str) -> str:
    return _b64url(hashlib.sha256(call_id.encode()).digest()[:6])


def _token_mac(secret: bytes, call_id: str, carrier: str, expiry: str) -> str:
    if len(secret) < _MIN_SECRET_BYTES:
        raise ValueError(f"stream token secret must be at least {_MIN_SECRET_BYTES} bytes")
    message = f"{_TOKEN_VERSION}|{carrier}|{call_id}|{expiry}".encode()
    return _b64url(hmac.new(secret, message, hashlib.sha256).digest())


def mint_stream_token(secret: bytes, call_id: str, carrier: str, ttl_s: int, now_s: float) -> str:
    """A token valid for ``ttl_s`` seconds for this call on this carrier only."""
    expiry = str(int(now_s) + ttl_s)
    mac = _token_mac(secret, call_id, carrier, expiry)
    return f"{_TOKEN_VERSION}.{expiry}.{_call_tag(call_id)}.{mac}"


def verify_stream_token(secret: bytes, token: str | None, call_id: str, carrier: str, now_s: float) -> None:
    """Return quietly for a valid token; otherwise raise ``TokenError`` with the reason."""
    if not token:
        raise TokenError("missing")
    match = _TOKEN_SHAPE.fullmatch(token) if len(token) <= _MAX_TOKEN_CHARS else None
    if match is None:
        raise TokenError("malformed")
    expiry, tag, mac = match.groups()
    if not hmac.compare_digest(tag, _call_tag(call_id)):
        raise TokenError("wrong_call")
    expected = _token_mac(secret, call_id, carrier, expiry)
    if not hmac.compare_digest(mac, expected):
        raise TokenError("bad_signature")
    if now_s >= int(expiry):
        raise TokenError("expired")
