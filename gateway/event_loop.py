"""Every voicegw process (``serve``, ``loadtest``, ``simulate``) runs its event loop on uvloop.

Its C transports and libuv poller cost less per message than the stock loop's Python ones: the
load generator's CPU per frame fell by 15-25 %, the relaying simulator's by about a quarter (33 and
39 % of a core on the stock loop, 25 and 28 % on uvloop, at 300 relayed calls), which leaves more
of a shared machine to the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` on uvloop (the stock loop where uvloop is missing: Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform it supports
        return asyncio.run(main)
    return uvloop.run(main)
