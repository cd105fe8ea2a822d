"""The process's per-frame counters, as a compiled class of their own.

``GatewayStats`` (``gateway/metrics.py``) is plain Python: bumping one of its attributes from a
compiled module costs a generic attribute lookup, a store and a boxed addition (~550 instructions,
twice per relayed frame). On this mypyc-compiled class the same ``+= 1`` is a field update in C.
"""

from __future__ import annotations


class FrameCounters:
    """Media frames since start, read by ``/metrics`` at scrape time."""

    def __init__(self) -> None:
        self.received = 0  # from carriers
        self.sent = 0  # to carriers
        self.dropped = 0  # bounded buffers full, or no provider
        self.transcoded = 0  # needed decoding or resampling
