"""Monthly billing periods in the workspace's own timezone, as epoch-second boundaries.

A period runs from local midnight on the 1st to local midnight on the next 1st: ``[start, end)``.
So an America/New_York March is 31 days minus the DST hour, and its boundaries are 05:00 UTC
(EST) and 04:00 UTC (EDT). A local midnight that does not exist (a DST jump at midnight) is
resolved as Python does for ``fold=0``: with the offset in force before the jump.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)

_UTC = ZoneInfo("UTC")


@lru_cache(maxsize=512)
def workspace_zone(name: str | None) -> ZoneInfo:
    """The workspace's zone; an unknown or empty name bills in UTC (and says so, once)."""
    if not name:
        return _UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("unknown workspace timezone %r: billing periods use UTC", name)
        return _UTC


def _local_midnight_first(zone: ZoneInfo, year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=zone).timestamp())


def month_start(zone: ZoneInfo, at_s: int) -> int:
    """Start of the local month containing ``at_s``."""
    local = datetime.fromtimestamp(at_s, zone)
    start = _local_midnight_first(zone, local.year, local.month)
    # When a jump skips midnight part-way (e.g. 23:30 → 00:30), fold=0 puts "midnight" a little
    # after the first instants of the new local month: those instants still start it.
    return min(start, at_s)


def next_month_start(zone: ZoneInfo, at_s: int) -> int:
    """The first local month boundary strictly after ``at_s``."""
    local = datetime.fromtimestamp(at_s, zone)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return _local_midnight_first(zone, year, month)


def period_label(zone: ZoneInfo, period_start: int) -> str:
    """``YYYY-MM`` of the local month a period covers (taken a day in, safe from edge offsets)."""
    local = datetime.fromtimestamp(period_start, zone) + timedelta(days=1)
    return f"{local.year:04d}-{local.month:02d}"


def parse_label(label: str) -> tuple[int, int]:
    """``YYYY-MM`` → (year, month); anything else is a ValueError with a clear message."""
    try:
        year_text, month_text = label.split("-")
        year, month = int(year_text), int(month_text)
    except ValueError:
        raise ValueError(f"period must be YYYY-MM, got {label!r}") from None
    if len(year_text) != 4 or len(month_text) != 2 or not 1 <= month <= 12:
        raise ValueError(f"period must be YYYY-MM, got {label!r}")
    return year, month
