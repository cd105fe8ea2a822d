"""A caller that behaves like Twilio between the webhook and the media socket, for pre-connect checks.

Twilio fetches the TwiML, then opens the media WebSocket a few hundred milliseconds later; the
provider connection opened during that window is what pre-connect saves. ``first_audio_after``
returns seconds from the webhook POST to the first agent audio on the media socket.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from loadtest.carriers.markup import StreamTarget
from tests.e2e.conftest import RunningGateway
from tests.e2e.test_bad_input import answer_twilio, media_msg, start_msg


async def first_audio_after(gw: RunningGateway, to: str, carrier_delay_s: float) -> tuple[float, str]:
    t0 = time.monotonic()
    target = await answer_twilio(gw, to=to)
    assert isinstance(target, StreamTarget)
    await asyncio.sleep(carrier_delay_s)  # the carrier's own TwiML fetch → WSS connect time
    ws = await gw.http.ws_connect(target.url)
    try:
        await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await ws.send_str(start_msg(target))
        await ws.send_str(media_msg())
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            if '"event":"media"' in msg.data:
                return time.monotonic() - t0, target.parameters["call_id"]
    finally:
        await ws.close()
