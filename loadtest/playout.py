"""Sans-I/O model of a carrier's play-out buffer: what the caller hears, and when marks come back.

Twilio and Telnyx keep a FIFO of (audio | mark) per stream, play audio in real time, echo a mark when the
play head passes it (at once if nothing is queued), and on ``clear`` drop queued audio and echo every
pending mark. Times are computed analytically from the byte rate, so no per-sample clock is needed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class ClearOutcome:
    marks: list[str]
    dropped_bytes: int


class PlayoutBuffer:
    """Tracks queued gateway audio and marks for one stream; ``now`` is the caller's monotonic clock."""

    __slots__ = ("_bps", "_end", "_pending", "bytes_dropped", "bytes_enqueued", "mark_due_at", "played")

    def __init__(self, bytes_per_second: int, keep_audio: bool = False) -> None:
        self._bps = float(bytes_per_second)
        self._end = float("-inf")
        self._pending: deque[tuple[float, str]] = deque()
        # When the oldest pending mark is due (inf: none pending): one comparison per sent frame.
        self.mark_due_at = float("inf")
        self.played = bytearray() if keep_audio else None
        self.bytes_enqueued = 0
        self.bytes_dropped = 0

    def enqueue_audio(self, now: float, audio: bytes) -> float:
        """Queues ``audio``; returns the time its first byte plays."""
        start = max(now, self._end)
        self._end = start + len(audio) / self._bps
        self.bytes_enqueued += len(audio)
        if self.played is not None:
            self.played += audio
        return start

    def enqueue_mark(self, now: float, name: str) -> bool:
        """Queues a mark; True when nothing is playing so the mark must be echoed right away."""
        if self._end <= now:
            return True
        if not self._pending:
            self.mark_due_at = self._end
        self._pending.append((self._end, name))
        return False

    def due_marks(self, now: float) -> list[str]:
        """Marks whose audio has finished playing by ``now``, in queue order."""
        pending = self._pending
        if not pending or pending[0][0] > now:
            return []
        out = []
        while pending and pending[0][0] <= now:
            out.append(pending.popleft()[1])
        self.mark_due_at = pending[0][0] if pending else float("inf")
        return out

    def clear(self, now: float) -> ClearOutcome:
        """Drops unplayed audio; every pending mark is echoed (they were cleared, not played)."""
        dropped = round(max(0.0, self._end - now) * self._bps)
        self._end = min(self._end, now)
        self.bytes_dropped += dropped
        if self.played is not None and dropped:
            del self.played[-dropped:]
        marks = [name for _, name in self._pending]
        self._pending.clear()
        self.mark_due_at = float("inf")
        return ClearOutcome(marks, dropped)

    def busy_until(self) -> float:
        """When the queued audio finishes playing."""
        return self._end
