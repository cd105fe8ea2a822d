"""Calls the platform must refuse: a short spoken sentence, a hang-up, and a row saying why."""

from __future__ import annotations

import time

import pytest

from loadtest.carriers.markup import Refusal
from storage.provision import provision
from tests.e2e.conftest import RunningGateway
from tests.e2e.test_bad_input import answer_twilio

NOW = int(time.time())


def _tenant(
    name: str,
    number: str,
    *,
    status: str = "active",
    agent_status: str = "live",
    trial_ends_at: int | None = None,
) -> dict[str, object]:
    ws: dict[str, object] = {
        "name": name,
        "owner": "owner@example.com",
        "status": status,
        "subscription_tier": "starter",
        "phone_numbers": [{"number": number, "provider": "twilio"}],
        "agents": [
            {
                "name": f"{name} agent",
                "phone_number": number,
                "voice_provider": "echo",
                "voice_config": {},
                "config": {},
                "status": agent_status,
            }
        ],
    }
    if trial_ends_at is not None:
        ws["trial_ends_at"] = trial_ends_at
    return ws


@pytest.fixture
async def tenants(gateway: RunningGateway) -> RunningGateway:
    doc = {
        "client_users": [{"email": "owner@example.com", "name": "Owner"}],
        "workspaces": [
            _tenant("Suspended", "+15550003001", status="suspended"),
            _tenant("Cancelled", "+15550003002", status="cancelled"),
            _tenant("Expired trial", "+15550003003", status="trial", trial_ends_at=NOW - 3600),
            _tenant("Paused agent", "+15550003004", agent_status="paused"),
        ],
    }
    await provision(gateway.ctx.db, doc, gateway.ctx.box, now=NOW)
    return gateway


@pytest.mark.parametrize(
    "number,reason,words",
    [
        ("+15550003001", "workspace_suspended", "unavailable"),
        ("+15550003002", "workspace_cancelled", "no longer available"),
        ("+15550003003", "trial_expired", "trial"),
        ("+15550003004", "agent_unavailable", "not taking calls"),
    ],
)
async def test_refusal_says_why_and_records_it(
    tenants: RunningGateway, number: str, reason: str, words: str
) -> None:
    answer = await answer_twilio(tenants, to=number)
    assert isinstance(answer, Refusal)
    assert words in answer.text
    rows = await tenants.rows(
        "SELECT c.status, c.ended_at, e.event_data FROM calls c"
        " JOIN phone_numbers p ON p.id = c.phone_number_id JOIN call_events e ON e.call_id = c.id"
        " WHERE p.phone_number = ? AND e.event_type = 'refused'",
        (number,),
    )
    assert len(rows) == 1
    assert rows[0]["status"] == "failed" and rows[0]["ended_at"] is not None
    assert reason in str(rows[0]["event_data"])
    assert tenants.ctx.stats.refusals[reason] == 1
