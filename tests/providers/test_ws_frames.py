"""RFC 6455 framing (providers.ws_frames), checked against the websockets library's own frames."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from providers.ws_frames import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NO_STATUS,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameParser,
    close_payload,
    encode_frame,
    parse_close,
)

MAX = 70_000


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """A masked frame as the websockets library writes it: an independent implementation."""
    return Frame(opcode, data, fin=fin).serialize(mask=True, extensions=[])


def forged(first_byte: int, data: bytes) -> bytes:
    """A masked frame websockets refuses to write (bad bits); the all-zero key leaves data as is."""
    return bytes([first_byte, 0x80 | len(data)]) + b"\0\0\0\0" + data


def server_parser() -> FrameParser:
    return FrameParser(from_client=True, max_message_bytes=MAX)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 69_999])
def test_client_frames_of_every_length_form(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    assert server_parser().feed(client_frame(Opcode.BINARY, data)) == [(OP_BINARY, data)]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_our_frames_read_back_by_websockets(size: int) -> None:
    data = b"x" * size
    for mask in (False, True):
        raw = encode_frame(OP_TEXT, data, mask=mask)
        parsed = FrameParser(from_client=mask, max_message_bytes=1 << 20).feed(raw)
        assert parsed == [(OP_TEXT, data)]
    assert encode_frame(OP_TEXT, data) == Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])


def test_each_masked_frame_gets_its_own_key_across_pool_refills() -> None:
    keys = [encode_frame(OP_BINARY, b"", mask=True)[2:6] for _ in range(3000)]  # 3 pools of 1024
    assert len(set(keys)) > 2990  # 32-bit random keys: a few collisions at most, never a repeat run


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=200),
)
def test_any_split_of_the_byte_stream_gives_the_same_messages(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(client_frame(Opcode.BINARY, p) for p in payloads)
    parser = server_parser()
    got: list[tuple[int, bytes]] = []
    pos = 0
    for cut in cuts:
        got += parser.feed(stream[pos : pos + cut])
        pos += cut
    got += parser.feed(stream[pos:])
    assert got == [(OP_BINARY, p) for p in payloads]


def test_fragmented_text_with_a_ping_in_between() -> None:
    stream = (
        client_frame(Opcode.TEXT, b'{"event":', fin=False)
        + client_frame(Opcode.PING, b"hi")
        + client_frame(Opcode.CONT, b'"media"', fin=False)
        + client_frame(Opcode.CONT, b"}")
    )
    assert server_parser().feed(stream) == [(OP_PING, b"hi"), (OP_TEXT, b'{"event":"media"}')]


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (Frame(Opcode.TEXT, b"x").serialize(mask=False, extensions=[]), "must be masked"),
        (forged(0xC1, b"x"), "reserved bits"),
        (bytes([0x83, 0x80]) + b"\0\0\0\0", "unknown opcode"),
        (bytes([0x89, 0x80 | 126]) + struct.pack("!H", 126), "longer than 125"),
        (forged(0x09, b"x"), "fragmented control"),
        (client_frame(Opcode.CONT, b"x"), "no message to continue"),
        (client_frame(Opcode.TEXT, b"a", fin=False) + client_frame(Opcode.TEXT, b"b"), "inside a fragmented"),
        (bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 63), "top bit"),
    ],
)
def test_protocol_errors_close_with_1002(stream: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        server_parser().feed(stream)
    assert err.value.close_code == CLOSE_PROTOCOL_ERROR
    assert reason in err.value.reason


def test_server_frames_must_not_be_masked() -> None:
    with pytest.raises(FrameError, match="must not be masked"):
        FrameParser(from_client=False, max_message_bytes=MAX).feed(client_frame(Opcode.TEXT, b"x"))


def test_an_oversize_frame_is_refused_from_its_header_alone() -> None:
    header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", MAX + 1)  # no payload sent at all
    with pytest.raises(FrameError) as err:
        server_parser().feed(header)
    assert err.value.close_code == CLOSE_TOO_BIG


def test_an_oversize_fragmented_message_is_refused() -> None:
    half = b"x" * (MAX // 2 + 1)
    with pytest.raises(FrameError) as err:
        server_parser().feed(client_frame(Opcode.TEXT, half, fin=False) + client_frame(Opcode.CONT, half))
    assert err.value.close_code == CLOSE_TOO_BIG


def test_messages_before_an_error_are_carried_by_it() -> None:
    stream = client_frame(Opcode.TEXT, b"first") + forged(0xC1, b"x")
    with pytest.raises(FrameError) as err:
        server_parser().feed(stream)
    assert err.value.messages == [(OP_TEXT, b"first")]


def test_close_payloads() -> None:
    assert parse_close(b"") == (CLOSE_NO_STATUS, "")
    assert parse_close(close_payload(4401, "stream token forged")) == (4401, "stream token forged")
    assert len(close_payload(1000, "é" * 100)) <= 125
    for bad in (b"\x03", struct.pack("!H", 1005), struct.pack("!H", 999), struct.pack("!H", 2000)):
        with pytest.raises(FrameError) as err:
            parse_close(bad)
        assert err.value.close_code == CLOSE_PROTOCOL_ERROR
    with pytest.raises(FrameError) as err:
        parse_close(struct.pack("!H", 1000) + b"\xff")
    assert err.value.close_code == CLOSE_INVALID_PAYLOAD
    assert server_parser().feed(client_frame(Opcode.CLOSE, close_payload(1000))) == [
        (OP_CLOSE, close_payload(1000))
    ]
    assert OP_CONT == 0
