"""Exceptions kept after they were handled lose their tracebacks, so a finished call leaves no cycle.

A traceback holds the frames the exception passed through, and those frames hold whoever caught
it: a socket that keeps its framing error, a connect task that holds its failure (whose traceback
holds ``wait_for``'s frame, which holds the task). Such a cycle is freed only by a full garbage
collection, which stops every live call (``tests/e2e/test_call_garbage.py``). What we keep of a
handled exception is its type and message.
"""

from __future__ import annotations


def drop_tracebacks(exc: BaseException) -> None:
    """Clears the traceback of ``exc`` and of every exception it was raised from or during."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
