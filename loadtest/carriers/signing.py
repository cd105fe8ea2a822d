"""Webhook signatures exactly as the carriers compute them (telephony.md 1.9 and 2.5)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 over the URL followed by name+value of sorted params."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def telnyx_private_key(seed_b64: str) -> Ed25519PrivateKey:
    """The Ed25519 key from its base64 32-byte seed; a clear error for anything else."""
    try:
        seed = base64.b64decode(seed_b64, validate=True)
    except ValueError as exc:
        raise ValueError("Telnyx private key must be base64") from exc
    if len(seed) != 32:
        raise ValueError(f"Telnyx private key must be a 32-byte seed, got {len(seed)} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def telnyx_signature(key: Ed25519PrivateKey, timestamp: str, body: bytes) -> str:
    """``telnyx-signature-ed25519``: base64 Ed25519 signature of ``f"{timestamp}|"`` + raw body."""
    return base64.b64encode(key.sign(timestamp.encode("ascii") + b"|" + body)).decode("ascii")
