"""The carrier play-out model: marks at play-out, at once when idle, all (as cleared) on clear."""

from __future__ import annotations

from loadtest.playout import PlayoutBuffer


def test_mark_when_idle_is_immediate() -> None:
    buf = PlayoutBuffer(8000)
    assert buf.enqueue_mark(10.0, "a") is True
    buf.enqueue_audio(10.0, b"\xff" * 160)
    assert buf.enqueue_mark(10.05, "b") is True  # the 20 ms of audio finished at 10.02


def test_marks_echo_when_play_head_passes_them() -> None:
    buf = PlayoutBuffer(8000)
    assert buf.enqueue_audio(10.0, b"\xff" * 800) == 10.0  # plays 10.0 .. 10.1
    assert buf.enqueue_mark(10.0, "first") is False
    assert buf.enqueue_audio(10.01, b"\xff" * 400) == 10.1  # queued behind: 10.1 .. 10.15
    assert buf.enqueue_mark(10.01, "second") is False
    assert buf.due_marks(10.05) == []
    assert buf.due_marks(10.1) == ["first"]
    assert buf.due_marks(10.149) == []
    assert buf.due_marks(10.2) == ["second"]
    assert buf.busy_until() == 10.15


def test_mark_due_at_tracks_the_oldest_pending_mark() -> None:
    buf = PlayoutBuffer(8000)
    assert buf.mark_due_at == float("inf")
    buf.enqueue_audio(10.0, b"\xff" * 800)
    buf.enqueue_mark(10.0, "first")  # due 10.1
    buf.enqueue_audio(10.0, b"\xff" * 400)
    buf.enqueue_mark(10.0, "second")  # due 10.15
    assert buf.mark_due_at == 10.1
    assert buf.due_marks(10.12) == ["first"] and buf.mark_due_at == 10.15
    buf.clear(10.13)
    assert buf.mark_due_at == float("inf")


def test_clear_drops_audio_and_returns_every_pending_mark() -> None:
    buf = PlayoutBuffer(8000, keep_audio=True)
    buf.enqueue_audio(0.0, b"\x01" * 800)
    buf.enqueue_mark(0.0, "m1")
    buf.enqueue_audio(0.0, b"\x02" * 800)
    buf.enqueue_mark(0.0, "m2")
    outcome = buf.clear(0.05)  # 400 of the 1600 bytes have played
    assert outcome.marks == ["m1", "m2"]
    assert outcome.dropped_bytes == 1200
    assert buf.played == bytearray(b"\x01" * 400)
    assert buf.due_marks(1.0) == []
    # After a clear the buffer is idle, so the next mark comes straight back.
    assert buf.enqueue_mark(0.05, "m3") is True
    assert buf.enqueue_audio(0.06, b"\x03" * 160) == 0.06


def test_l16_plays_two_bytes_per_sample() -> None:
    buf = PlayoutBuffer(32000)  # L16 at 16 kHz
    buf.enqueue_audio(0.0, b"\x00" * 640)
    assert abs(buf.busy_until() - 0.02) < 1e-12
