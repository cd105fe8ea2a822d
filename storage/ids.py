"""Row ids and clock.

Ids are UUIDv7 strings (RFC 9562): a 48-bit millisecond timestamp first, so ids sort by creation
time and new rows land at the end of primary-key b-trees (cheap inserts). Within one process ids
are strictly increasing: the 12-bit ``rand_a`` field is a counter that borrows the next
millisecond when it overflows. Timestamps everywhere in the schema are integer epoch SECONDS.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_ENTROPY_CHUNK = 10 * 512  # one os.urandom call per 512 ids instead of one syscall per id
_entropy = b""
_entropy_at = 0


def _reseed_after_fork() -> None:
    """Forked workers must not reuse the parent's buffered entropy (they would mint equal ids)."""
    global _entropy, _entropy_at, _last_ms, _counter
    _entropy, _entropy_at, _last_ms, _counter = b"", 0, 0, 0


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_id() -> str:
    """A fresh UUIDv7, greater than every id this process made before."""
    global _last_ms, _counter, _entropy, _entropy_at
    with _lock:
        if _entropy_at >= len(_entropy):
            _entropy, _entropy_at = os.urandom(_ENTROPY_CHUNK), 0
        entropy = int.from_bytes(_entropy[_entropy_at : _entropy_at + 10], "big")
        _entropy_at += 10
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _counter = entropy & 0x7FF  # start in the lower half: room for >= 2048 ids this ms
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
        value = (_last_ms << 80) | (0x7 << 76) | (_counter << 64) | (0b10 << 62) | (entropy >> 18)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_s() -> int:
    """Wall-clock time as integer epoch seconds, the unit of every timestamp column."""
    return int(time.time())
