"""G.711 and L16 conversions between carrier payloads and PCM16, as the carriers' codecs define them."""

from __future__ import annotations

import audioop  # stdlib on 3.11/3.12; the ``audioop-lts`` package provides it on >= 3.13
import sys
from typing import Literal

import numpy as np

Encoding = Literal["PCMU", "PCMA", "L16"]

# UNVERIFIED (telephony.md 2.4): Telnyx L16 byte order is disputed; RFC 2586 says network (big-endian)
# order, one public implementation uses little-endian. One constant to flip if the gateway disagrees.
L16_BYTE_ORDER: Literal["big", "little"] = "big"

ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

_ULAW_TABLE = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype="<i2").astype(np.float32)
_ALAW_TABLE = np.frombuffer(audioop.alaw2lin(bytes(range(256)), 2), dtype="<i2").astype(np.float32)


def bytes_per_second(encoding: Encoding, sample_rate: int) -> int:
    """Play-out rate of a payload stream: G.711 is one byte per sample, L16 two."""
    return sample_rate * (2 if encoding == "L16" else 1)


def encode(pcm16: bytes, encoding: Encoding) -> bytes:
    """Native-order PCM16 to the carrier payload encoding."""
    if encoding == "PCMU":
        return audioop.lin2ulaw(pcm16, 2)
    if encoding == "PCMA":
        return audioop.lin2alaw(pcm16, 2)
    return _swap_if_needed(pcm16)


def decode_to_float(payload: bytes, encoding: Encoding) -> np.ndarray:
    """Carrier payload to float32 samples in PCM16 scale; table lookups keep this cheap per frame."""
    raw = np.frombuffer(payload, dtype=np.uint8)
    if encoding == "PCMU":
        return _ULAW_TABLE[raw]
    if encoding == "PCMA":
        return _ALAW_TABLE[raw]
    usable = len(payload) - len(payload) % 2
    dtype = ">i2" if L16_BYTE_ORDER == "big" else "<i2"
    return np.frombuffer(payload[:usable], dtype=dtype).astype(np.float32)


def silence(encoding: Encoding, samples: int) -> bytes:
    """Digital silence of ``samples`` samples in ``encoding``."""
    if encoding == "PCMU":
        return bytes([ULAW_SILENCE]) * samples
    if encoding == "PCMA":
        return bytes([ALAW_SILENCE]) * samples
    return b"\x00\x00" * samples


def _swap_if_needed(pcm16: bytes) -> bytes:
    native_big = sys.byteorder == "big"
    want_big = L16_BYTE_ORDER == "big"
    return pcm16 if native_big == want_big else audioop.byteswap(pcm16, 2)
