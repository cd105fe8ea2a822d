"""Encryption at rest for provider API keys and integration credentials (AES-256-GCM).

Tokens look like ``v1:<base64url(nonce || ciphertext+tag)>``: the version prefix lets the key or
scheme change later. The key comes from ``VOICEGW_SECRET_KEY`` (base64 of 32 bytes). For local
development only, a key can be generated once into a file (mode 0600) with a loud warning.
Plaintext never reaches the database or a log line; nothing here logs secrets or keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

ENV_KEY = "VOICEGW_SECRET_KEY"
DEFAULT_DEV_KEY_PATH = Path("var/secret.key")  # the file `voicegw serve` uses too
_VERSION = "v1"
_AAD = b"voicegw-secret-v1"  # binds tokens to this scheme
_NONCE_BYTES = 12


class SecretError(Exception):
    """A key or token is unusable: missing key, malformed token, wrong key or tampering."""


class SecretBox:
    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for another purpose (HMAC-SHA256 of the purpose under this key).

        Every gateway node sharing the database shares this key, so derived secrets agree
        across nodes without a second secret to distribute.
        """
        return hmac.new(self._key, b"voicegw:" + purpose.encode("utf-8"), hashlib.sha256).digest()

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretError("secret key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, plain: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plain.encode("utf-8"), _AAD)
        return f"{_VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def decrypt(self, token: str) -> str:
        version, sep, body = token.partition(":")
        if not sep or version != _VERSION:
            raise SecretError(f"unsupported secret token format (expected {_VERSION}:...)")
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise SecretError("secret token is not valid base64") from exc
        if len(raw) < _NONCE_BYTES + 16:
            raise SecretError("secret token is truncated")
        try:
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
        except InvalidTag as exc:
            raise SecretError("cannot decrypt secret: wrong key or tampered token") from exc
        return plain.decode("utf-8")


def generate_key() -> str:
    """A new key, in the form ``VOICEGW_SECRET_KEY`` expects."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def _decode_key(text: str, origin: str) -> bytes:
    text = text.strip()
    try:  # standard or URL-safe alphabet
        key = base64.b64decode(text.translate(str.maketrans("-_", "+/")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError(f"{origin} is not valid base64") from exc
    if len(key) != 32:
        raise SecretError(f"{origin} must be base64 of 32 bytes (got {len(key)} bytes)")
    return key


def load_secret_box(env: Mapping[str, str] = os.environ, dev_key_path: Path | str | None = None) -> SecretBox:
    """The box keyed from ``VOICEGW_SECRET_KEY``; else from (or into) ``dev_key_path``, if given."""
    configured = env.get(ENV_KEY)
    if configured:
        return SecretBox(_decode_key(configured, ENV_KEY))
    if dev_key_path is None:
        raise SecretError(f"{ENV_KEY} is not set (base64 of 32 random bytes)")
    path = Path(dev_key_path)
    if path.exists():
        log.warning("%s is not set: using the development key file %s", ENV_KEY, path)
        return SecretBox(_decode_key(path.read_text("ascii"), str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    key_text = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key_text + "\n")
    log.warning("%s is not set: generated a development key into %s (not for production)", ENV_KEY, path)
    return SecretBox(_decode_key(key_text, str(path)))
