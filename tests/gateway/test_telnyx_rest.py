"""Telnyx Call Control hang-up against a real local HTTP server standing in for api.telnyx.com."""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.carriers.telnyx_rest import hangup

CCID = "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ"


class FakeTelnyxApi:
    """Answers every hang-up with the configured status and JSON body, recording requests."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {"data": {"result": "ok"}}
        self.requests: list[tuple[str, str, str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            (request.method, request.raw_path, request.headers.get("Authorization", ""), await request.read())
        )
        if isinstance(self.body, bytes):
            return web.Response(status=self.status, body=self.body)
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def api(aiohttp_server: Any) -> tuple[FakeTelnyxApi, TestServer]:
    fake = FakeTelnyxApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    return fake, await aiohttp_server(app)


async def test_successful_hangup_sends_bearer_post(api: tuple[FakeTelnyxApi, TestServer]) -> None:
    fake, server = api
    async with aiohttp.ClientSession() as http:
        assert await hangup(http, str(server.make_url("/")), "KEY123", CCID)
    method, path, auth, body = fake.requests[0]
    assert (method, path, auth) == ("POST", f"/v2/calls/{CCID}/actions/hangup", "Bearer KEY123")
    assert body == b"{}"


async def test_call_control_id_cannot_escape_the_path(api: tuple[FakeTelnyxApi, TestServer]) -> None:
    fake, server = api
    async with aiohttp.ClientSession() as http:
        await hangup(http, str(server.make_url("")), "k", "../x?y")
    assert fake.requests[0][1] == "/v2/calls/..%2Fx%3Fy/actions/hangup"


async def test_already_ended_counts_as_success(api: tuple[FakeTelnyxApi, TestServer]) -> None:
    fake, server = api
    fake.status = 422
    fake.body = {"errors": [{"code": "90018", "title": "Call has already ended"}]}
    async with aiohttp.ClientSession() as http:
        assert await hangup(http, str(server.make_url("/")), "k", CCID)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (422, {"errors": [{"code": "90015", "title": "Invalid value"}]}),
        (422, {"errors": "nope"}),
        (401, {"errors": [{"code": "10009", "title": "Authentication failed"}]}),
        (500, b"<html>oops</html>"),
    ],
)
async def test_other_failures_are_logged_and_false(
    api: tuple[FakeTelnyxApi, TestServer], caplog: pytest.LogCaptureFixture, status: int, body: Any
) -> None:
    fake, server = api
    fake.status, fake.body = status, body
    with caplog.at_level(logging.WARNING, logger="gateway.carriers.telnyx_rest"):
        async with aiohttp.ClientSession() as http:
            assert not await hangup(http, str(server.make_url("/")), "SECRET-KEY", CCID)
    assert f"HTTP {status}" in caplog.text
    assert "SECRET-KEY" not in caplog.text


async def test_unreachable_api_is_false(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="gateway.carriers.telnyx_rest"):
        async with aiohttp.ClientSession() as http:
            assert not await hangup(http, f"http://127.0.0.1:{port}", "k", CCID)
    assert "ClientConnectorError" in caplog.text
