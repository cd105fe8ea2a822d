"""After a load of real calls, the money adds up exactly (issue: usage and billing).

N calls of known length go through the gateway on a provider with a known price; the sum of
``usage_records.final_cost`` must equal the figure computed here independently from each call's
billed duration, and the workspace's ``billing_periods.subtotal`` must equal that sum.
"""

from __future__ import annotations

import asyncio
import time
from decimal import ROUND_HALF_UP, Decimal

from loadtest.carriers.call import place_call
from loadtest.carriers.plan import CallPlan
from storage.provision import provision
from tests.e2e.conftest import RunningGateway

NUMBER = "+15550006001"
PRICE = Decimal("0.12")  # per minute, the workspace's own price for echo
MARKUP = Decimal("20")  # platform setting pricing_markup_percentage (seed default)
CALLS = 20


def q(value: Decimal, places: str) -> Decimal:
    return value.quantize(Decimal(places), rounding=ROUND_HALF_UP)


async def test_sum_of_final_cost_after_a_load_is_exact(gateway: RunningGateway) -> None:
    await provision(
        gateway.ctx.db,
        {
            "client_users": [{"email": "bill@example.com", "name": "Bill"}],
            "workspaces": [
                {
                    "name": "Billing load",
                    "owner": "bill@example.com",
                    "status": "active",
                    "subscription_tier": "starter",
                    "timezone": "America/New_York",
                    "phone_numbers": [{"number": NUMBER, "provider": "twilio"}],
                    "agents": [
                        {
                            "name": "Echo",
                            "phone_number": NUMBER,
                            "voice_provider": "echo",
                            "status": "live",
                            "config": {},
                            "voice_config": {},
                        }
                    ],
                    "provider_configs": [{"provider": "echo", "config": {"cost_per_unit": float(PRICE)}}],
                }
            ],
        },
        gateway.ctx.box,
        now=int(time.time()),
    )
    results = await asyncio.gather(
        *(
            place_call(
                gateway.http,
                gateway.url,
                CallPlan(to=NUMBER, duration_s=1.0 + (i % 4) * 0.5),
                credentials=gateway.credentials,
            )
            for i in range(CALLS)
        )
    )
    assert all(not r.errors for r in results)
    await asyncio.wait_for(gateway.ctx.no_live_calls.wait(), 10)

    calls = await gateway.rows(
        "SELECT c.id, c.duration_seconds, c.cost_total FROM calls c"
        " JOIN workspaces w ON w.id = c.workspace_id"
        " WHERE w.name = 'Billing load'"
    )
    assert len(calls) == CALLS
    expected = Decimal(0)
    for call in calls:
        minutes = q(Decimal(int(call["duration_seconds"])) / 60, "0.0001")  # type: ignore[arg-type]
        cost = q(q(minutes * PRICE, "0.000001") * (1 + MARKUP / 100), "0.000001")
        assert Decimal(str(call["cost_total"])) == cost  # starter includes 100 minutes: no overage
        expected += cost
    usage = await gateway.rows(
        "SELECT u.final_cost, u.resource_type FROM usage_records u JOIN workspaces w ON w.id = u.workspace_id"
        " WHERE w.name = 'Billing load'"
    )
    assert {u["resource_type"] for u in usage} == {"call_minutes"}
    total = sum((Decimal(str(u["final_cost"])) for u in usage), Decimal(0))
    assert total == expected
    (period,) = await gateway.rows(
        "SELECT p.subtotal, p.status FROM billing_periods p JOIN workspaces w ON w.id = p.workspace_id"
        " WHERE w.name = 'Billing load'"
    )
    assert period["status"] == "current"
    assert Decimal(str(period["subtotal"])) == expected
    print(
        f"\n{CALLS} calls, {sum(int(c['duration_seconds']) for c in calls)} s billed: "  # type: ignore[misc]
        f"sum(final_cost) = subtotal = {expected}"
    )
