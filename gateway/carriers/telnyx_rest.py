"""Ending a Telnyx call from our side (closing the media socket alone may leave it up).

UNVERIFIED (reported, not documented): closing the WebSocket does not end a Telnyx call, so
the gateway always hangs up through Call Control as well.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson

log = logging.getLogger(__name__)

ALREADY_ENDED_CODE: Final = "90018"  # 422 errors[].code: "Call has already ended"
REQUEST_TIMEOUT_S: Final = 5.0


async def hangup(http: aiohttp.ClientSession, base_url: str, api_key: str, call_control_id: str) -> bool:
    """POST ``/v2/calls/{id}/actions/hangup``; True when the call is (or already was) over.

    Never raises for HTTP or network trouble: the caller is tearing a call down anyway.
    """
    url = f"{base_url.rstrip('/')}/v2/calls/{quote(call_control_id, safe=':')}/actions/hangup"
    try:
        async with http.post(
            url,
            json={},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        ) as response:
            if 200 <= response.status < 300:
                return True
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("telnyx hangup of %s failed: %s", call_control_id, type(exc).__name__)
        return False
    if response.status == 422 and ALREADY_ENDED_CODE in _error_codes(body):
        log.info("telnyx hangup of %s: call had already ended", call_control_id)
        return True
    log.warning("telnyx hangup of %s refused: HTTP %d %s", call_control_id, response.status, body[:200])
    return False


def _error_codes(body: bytes) -> set[str]:
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return set()
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return set()
    return {str(e.get("code")) for e in errors if isinstance(e, dict)}
