"""The slice of the Telnyx REST API the gateway calls: ``POST /v2/calls/{id}/actions/hangup``.

Closing the media socket does not end a Telnyx call (telephony.md 2.6), so the gateway hangs up over
REST; this server finds the matching simulated call and ends it as Telnyx would (``stop``, close).
"""

from __future__ import annotations

import hmac
import logging
from typing import Protocol

from aiohttp import web

from loadtest.carriers.plan import EndedBy

log = logging.getLogger(__name__)


class HangupTarget(Protocol):
    async def hang_up(self, by: EndedBy) -> None: ...


class TelnyxApi:
    """A tiny aiohttp server; ``base_url`` is what the gateway's ``telnyx_api_base`` must point at.

    With ``api_key`` set, the Bearer token must match it; otherwise any Bearer token is accepted.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self._host = host
        self._port = port
        self._api_key = api_key
        self._calls: dict[str, HangupTarget] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.hangups = 0

    def register(self, call_control_id: str, call: HangupTarget) -> None:
        self._calls[call_control_id] = call

    def unregister(self, call_control_id: str) -> None:
        self._calls.pop(call_control_id, None)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v2/calls/{call_control_id}/actions/hangup", self._hangup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://{self._host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TelnyxApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _hangup(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not token or (self._api_key is not None and not hmac.compare_digest(token, self._api_key)):
            log.warning("Telnyx hang-up rejected: missing or wrong Bearer token")
            return web.json_response(
                {"errors": [{"code": "10009", "title": "Authentication failed"}]}, status=401
            )
        call_control_id = request.match_info["call_control_id"]
        call = self._calls.pop(call_control_id, None)
        if call is None:
            # Telnyx answers 422 with code 90018 when the call has already ended.
            return web.json_response(
                {
                    "errors": [
                        {
                            "code": "90018",
                            "title": "Call has already ended",
                            "detail": "This call is no longer active and can't receive commands.",
                        }
                    ]
                },
                status=422,
            )
        self.hangups += 1
        await call.hang_up("gateway-rest")
        return web.json_response({"data": {"result": "ok"}})
