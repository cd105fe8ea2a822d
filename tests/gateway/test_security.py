"""Webhook signatures (official Twilio vectors, the reference's Ed25519 vector) and stream tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from multidict import MultiDict

from gateway.security import (
    TokenError,
    mint_stream_token,
    sign_telnyx,
    twilio_signature,
    verify_stream_token,
    verify_telnyx_signature,
    verify_twilio_signature,
)

# ---------------------------------------------------------------------------------------------
# Twilio
# ---------------------------------------------------------------------------------------------

DOC_URL = "https://example.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {
    "Digits": "1234",
    "To": "+18005551212",
    "From": "+14158675310",
    "Caller": "+14158675310",
    "CallSid": "CA1234567890ABCDE",
}
PY_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PY_URL_443 = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
PY_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


def test_twilio_documentation_vector() -> None:
    assert twilio_signature("12345", DOC_URL, DOC_PARAMS) == "L/OH5YylLD5NRKLltdqwSvS0BnU="
    assert verify_twilio_signature("12345", DOC_URL, DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnU=")


def test_twilio_python_vectors_with_and_without_default_port() -> None:
    assert twilio_signature("12345", PY_URL, PY_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", PY_URL_443, PY_PARAMS) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    for url in (PY_URL, PY_URL_443):
        for signature in ("RSOYDt4T1cUTdK1PDd93/VVr8B8=", "kvajT1Ptam85bY51eRf/AJRuM3w="):
            assert verify_twilio_signature("12345", url, PY_PARAMS, signature)


def test_twilio_sort_is_case_sensitive_byte_order() -> None:
    # "CallSid" < "Caller" because 'S' (0x53) < 'e' (0x65).
    signed = DOC_URL + "CallSidCA1234567890ABCDECaller+14158675310Digits1234From+14158675310To+18005551212"
    expected = base64.b64encode(hmac.new(b"12345", signed.encode(), hashlib.sha1).digest()).decode()
    assert expected == "L/OH5YylLD5NRKLltdqwSvS0BnU="


def test_twilio_repeated_parameters() -> None:
    url = "https://example.com/voice"
    expected_string = url + "Digits1234Digits5678"
    expected = base64.b64encode(hmac.new(b"tok", expected_string.encode(), hashlib.sha1).digest()).decode()
    as_lists = {"Digits": ["5678", "1234", "1234"]}
    assert twilio_signature("tok", url, as_lists) == expected
    multi = MultiDict([("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")])
    assert twilio_signature("tok", url, multi) == expected
    assert verify_twilio_signature("tok", url, multi, expected)


def test_twilio_websocket_handshake_signs_wss_url_with_no_params() -> None:
    url = "wss://gw.example.com/twilio/media"
    signature = twilio_signature("secret-token", url, {})
    assert verify_twilio_signature("secret-token", url, {}, signature)
    assert verify_twilio_signature("secret-token", "wss://gw.example.com:443/twilio/media", {}, signature)


def test_twilio_credentials_in_url_are_not_signed() -> None:
    signature = twilio_signature("12345", PY_URL, PY_PARAMS)
    assert verify_twilio_signature(
        "12345", "https://user:pw@mycompany.com/myapp.php?foo=1&bar=2", PY_PARAMS, signature
    )


def test_twilio_ipv6_host_with_port() -> None:
    signature = twilio_signature("12345", "http://[::1]/voice", {"A": "1"})
    assert verify_twilio_signature("12345", "http://[::1]:8080/voice", {"A": "1"}, signature)


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("12345", DOC_URL, {**DOC_PARAMS, "Digits": "9999"}, "L/OH5YylLD5NRKLltdqwSvS0BnU="),
        ("54321", DOC_URL, DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnU="),
        ("12345", DOC_URL + "&x=1", DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnU="),
        ("12345", DOC_URL.replace("https", "http"), DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnU="),
        ("12345", DOC_URL, DOC_PARAMS, ""),
        ("12345", DOC_URL, DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnU"),
        ("12345", DOC_URL, DOC_PARAMS, "é" * 28),
        ("", DOC_URL, DOC_PARAMS, "L/OH5YylLD5NRKLltdqwSvS0BnU="),
    ],
)
def test_twilio_rejections(token: str, url: str, params: dict[str, str], signature: str) -> None:
    assert not verify_twilio_signature(token, url, params, signature)


# ---------------------------------------------------------------------------------------------
# Telnyx
# ---------------------------------------------------------------------------------------------

SEED = bytes(range(32))
PUBLIC_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
TIMESTAMP = "1700000000"
BODY = b'{"data":{"event_type":"call.initiated"}}'
SIGNATURE = "aBuTQ1AtxQGraK6PrtJP6VW9Mu+R2aG6TbxS7lim9/ia8dN94a42JYoTifASA18z3xe+GLlYfveWOuyyKq7OCw=="


def test_telnyx_reference_vector() -> None:
    assert sign_telnyx(SEED, TIMESTAMP, BODY) == SIGNATURE
    assert verify_telnyx_signature(PUBLIC_KEY, TIMESTAMP, BODY, SIGNATURE, now_s=1_700_000_010)


@pytest.mark.parametrize("now_s", [1_700_000_000 - 300, 1_700_000_000 + 300])
def test_telnyx_tolerance_edges_are_accepted(now_s: float) -> None:
    assert verify_telnyx_signature(PUBLIC_KEY, TIMESTAMP, BODY, SIGNATURE, now_s=now_s)


@pytest.mark.parametrize(
    ("key", "timestamp", "body", "signature", "now_s"),
    [
        (PUBLIC_KEY, TIMESTAMP, BODY, SIGNATURE, 1_700_000_301),  # stale
        (PUBLIC_KEY, TIMESTAMP, BODY, SIGNATURE, 1_699_999_699),  # from the future
        (PUBLIC_KEY, TIMESTAMP, BODY + b" ", SIGNATURE, 1_700_000_000),  # body changed
        (PUBLIC_KEY, "1700000001", BODY, SIGNATURE, 1_700_000_000),  # timestamp changed
        (PUBLIC_KEY, "17000000x0", BODY, SIGNATURE, 1_700_000_000),
        (PUBLIC_KEY, "", BODY, SIGNATURE, 1_700_000_000),
        (PUBLIC_KEY, TIMESTAMP, BODY, "", 1_700_000_000),
        (PUBLIC_KEY, TIMESTAMP, BODY, "not base64!", 1_700_000_000),
        (PUBLIC_KEY, TIMESTAMP, BODY, SIGNATURE[:-4], 1_700_000_000),  # 61 bytes
        ("A6EHv/POEL4dcN0Y50vAmWfk", TIMESTAMP, BODY, SIGNATURE, 1_700_000_000),  # short key
        (base64.b64encode(bytes(32)).decode(), TIMESTAMP, BODY, SIGNATURE, 1_700_000_000),  # other key
    ],
)
def test_telnyx_rejections(key: str, timestamp: str, body: bytes, signature: str, now_s: float) -> None:
    assert not verify_telnyx_signature(key, timestamp, body, signature, now_s)


# ---------------------------------------------------------------------------------------------
# Stream tokens
# ---------------------------------------------------------------------------------------------

SECRET = b"s" * 32
NOW = 1_700_000_000.5


def test_token_round_trip_is_short_and_url_safe() -> None:
    call_id = "0190f7a2-7c3e-7b11-9d5e-3f2a1b0c9d8e"
    token = mint_stream_token(SECRET, call_id, "twilio", 60, NOW)
    assert len(token) < 120
    assert re.fullmatch(r"[A-Za-z0-9._-]+", token)
    verify_stream_token(SECRET, token, call_id, "twilio", NOW)
    verify_stream_token(SECRET, token, call_id, "twilio", NOW + 59)


def test_token_expiry() -> None:
    token = mint_stream_token(SECRET, "call-1", "telnyx", 30, NOW)
    with pytest.raises(TokenError) as info:
        verify_stream_token(SECRET, token, "call-1", "telnyx", NOW + 30)
    assert info.value.reason == "expired"
    assert str(info.value) == "expired"


@pytest.mark.parametrize(
    ("secret", "call_id", "carrier", "reason"),
    [
        (SECRET, "call-2", "twilio", "wrong_call"),
        (SECRET, "call-1", "telnyx", "bad_signature"),  # minted for the other carrier
        (b"t" * 32, "call-1", "twilio", "bad_signature"),  # another gateway's secret
    ],
)
def test_token_binds_call_carrier_and_secret(secret: bytes, call_id: str, carrier: str, reason: str) -> None:
    token = mint_stream_token(SECRET, "call-1", "twilio", 60, NOW)
    with pytest.raises(TokenError) as info:
        verify_stream_token(secret, token, call_id, carrier, NOW)
    assert info.value.reason == reason


def test_forged_tokens() -> None:
    token = mint_stream_token(SECRET, "call-1", "twilio", 60, NOW)
    version, expiry, tag, mac = token.split(".")
    later = f"{version}.{int(expiry) + 3600}.{tag}.{mac}"  # extended expiry, same mac
    flipped = f"{version}.{expiry}.{tag}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}"
    for forged in (later, flipped):
        with pytest.raises(TokenError) as info:
            verify_stream_token(SECRET, forged, "call-1", "twilio", NOW)
        assert info.value.reason == "bad_signature"


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token(token: str | None) -> None:
    with pytest.raises(TokenError) as info:
        verify_stream_token(SECRET, token, "call-1", "twilio", NOW)
    assert info.value.reason == "missing"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "v1.1.2",
        "v2.1700000060.AAAAAAAA." + "A" * 43,
        "v1.17000x0060.AAAAAAAA." + "A" * 43,
        "v1.1700000060.AAAA." + "A" * 43,
        "v1.1700000060.AAAAAAAA." + "A" * 42,
        "v1.1700000060.AAAAAAAA." + "A" * 400,
        "v1.1700000060.AAAAAAAA.é" + "A" * 42,
    ],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenError) as info:
        verify_stream_token(SECRET, token, "call-1", "twilio", NOW)
    assert info.value.reason == "malformed"


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        mint_stream_token(b"short", "call-1", "twilio", 60, NOW)
