"""Query modules against both backends: tenancy, provider configs, calls, settings."""

from __future__ import annotations

import pytest

from storage import calls, provider_configs, settings, tenancy
from storage.db import Database
from storage.ids import new_id
from storage.models import ProviderHealth, VoiceAgent
from storage.secrets import SecretBox
from storage.tenancy import NumberRoute
from storage.writer import Statement
from tests.storage.conftest import NOW


async def run(db: Database, *stmts: Statement) -> None:
    async with db.transaction() as tx:
        for stmt in stmts:
            await tx.execute(stmt.sql, stmt.params)


async def add_agent(db: Database, route: NumberRoute, name: str, status: str, created_at: int) -> str:
    agent_id = new_id()
    await db.execute(
        "INSERT INTO voice_agents (id, workspace_id, phone_number_id, name, config, voice_provider,"
        " voice_config, status, created_at, updated_at) VALUES (?, ?, ?, ?, '{}', 'echo', '{}', ?, ?, ?)",
        (agent_id, route.workspace.id, route.number.id, name, status, created_at, created_at),
    )
    return agent_id


async def test_resolve_number_returns_number_agent_and_workspace(db: Database, demo: NumberRoute) -> None:
    assert demo.number.phone_number == "+15550001111" and demo.number.provider == "twilio"
    assert demo.workspace.name == "Demo" and demo.workspace.status == "trial"
    assert demo.workspace.subscription_tier == "professional"
    assert demo.workspace.trial_ends_at == NOW + 3650 * 86400
    assert isinstance(demo.agent, VoiceAgent)
    assert demo.agent.status == "live" and demo.agent.voice_provider == "echo"
    assert demo.agent.phone_number_id == demo.number.id and demo.agent.voice_config_dict() == {}
    other = await tenancy.resolve_number(db, "+15550002222")
    assert other is not None and other.agent is not None and other.number.provider == "telnyx"
    assert other.agent.id != demo.agent.id
    assert await tenancy.resolve_number(db, "+15559999999") is None


async def test_resolve_number_prefers_live_then_testing_then_newest(db: Database, demo: NumberRoute) -> None:
    assert demo.agent is not None
    await db.execute("UPDATE voice_agents SET status = 'paused' WHERE id = ?", (demo.agent.id,))
    old_draft = await add_agent(db, demo, "old draft", "draft", NOW + 1)
    route = await tenancy.resolve_number(db, "+15550001111")
    assert route is not None and route.agent is not None and route.agent.id == old_draft  # newest
    testing = await add_agent(db, demo, "testing", "testing", NOW - 5)
    route = await tenancy.resolve_number(db, "+15550001111")
    assert route is not None and route.agent is not None and route.agent.id == testing
    await db.execute("UPDATE voice_agents SET status = 'live' WHERE id = ?", (demo.agent.id,))
    route = await tenancy.resolve_number(db, "+15550001111")
    assert route is not None and route.agent is not None and route.agent.id == demo.agent.id


async def test_resolve_number_without_agent(db: Database, demo: NumberRoute) -> None:
    await db.execute("UPDATE voice_agents SET phone_number_id = NULL")
    route = await tenancy.resolve_number(db, "+15550001111")
    assert route is not None and route.agent is None and route.workspace.id == demo.workspace.id


async def test_tenancy_reads(db: Database, demo: NumberRoute) -> None:
    owner = await tenancy.get_client_user_by_email(db, "demo@example.com")
    assert owner is not None and owner.id == demo.workspace.owner_id and owner.email_verified == 1
    assert await tenancy.get_client_user(db, owner.id) == owner
    assert await tenancy.get_workspace(db, demo.workspace.id) == demo.workspace
    assert await tenancy.list_workspaces(db) == [demo.workspace]
    assert await tenancy.list_workspaces(db, owner.id) == [demo.workspace]
    members = await tenancy.list_members(db, demo.workspace.id)
    assert [(m.user_id, m.role) for m in members] == [(owner.id, "owner")]
    numbers = await tenancy.list_phone_numbers(db, demo.workspace.id)
    assert sorted(n.phone_number for n in numbers) == ["+15550001111", "+15550002222"]
    assert await tenancy.get_phone_number(db, "+15550001111") == demo.number
    agents = await tenancy.list_agents(db, demo.workspace.id)
    assert len(agents) == 2 and demo.agent in agents
    assert demo.agent is not None and await tenancy.get_agent(db, demo.agent.id) == demo.agent


async def test_routing_inputs_and_health(db: Database, demo: NumberRoute, box: SecretBox) -> None:
    inputs = await provider_configs.load_routing_inputs(db, demo.workspace.id)
    assert [p.provider for p in inputs.platform] == ["echo"]
    echo = inputs.platform[0]
    assert box.decrypt(echo.api_key_encrypted) == "none" and echo.cost_per_unit == 0.0
    assert echo.priority == 0 and echo.is_enabled == 1 and echo.config_dict() == {}
    assert inputs.workspace == ()
    assert inputs.strategy is not None and inputs.strategy.strategy == "auto"
    assert inputs.strategy.fallback_enabled == 1
    other = await provider_configs.load_routing_inputs(db, "no-such-workspace")
    assert other.strategy is None and other.workspace == ()

    assert await provider_configs.load_health(db) == []
    first = ProviderHealth("echo", "local", "healthy", NOW, 0.0, 12, None)
    second = ProviderHealth("echo", "local", "degraded", NOW + 5, 0.25, 80, '{"error": "slow"}')
    other_region = ProviderHealth("echo", "eu", "down", NOW, 1.0, None, None)
    upsert = provider_configs.upsert_health_stmt
    await run(db, upsert(first), upsert(other_region))
    await run(db, provider_configs.upsert_health_stmt(second))
    assert await provider_configs.load_health(db) == [other_region, second]
    with pytest.raises(ValueError, match="status"):
        provider_configs.upsert_health_stmt(ProviderHealth("echo", "x", "sick", NOW, None, None, None))


async def test_call_lifecycle_statements_and_reads(db: Database, demo: NumberRoute) -> None:
    assert demo.agent is not None
    call_id = new_id()
    await run(
        db,
        calls.insert_call_stmt(
            call_id=call_id,
            workspace_id=demo.workspace.id,
            agent_id=demo.agent.id,
            phone_number_id=demo.number.id,
            caller_number="+15551234567",
            direction="inbound",
            status="ringing",
            voice_provider_used="echo",
            started_at=NOW,
            provider_call_sid="CA123",
            metadata={"carrier": "twilio"},
        ),
    )
    call = await calls.get_call(db, call_id)
    assert call is not None and call.status == "ringing" and call.metadata == '{"carrier":"twilio"}'
    assert await calls.get_call_by_sid(db, "CA123") == call
    assert await calls.claim_call(db, call_id) is True
    assert await calls.claim_call(db, call_id) is False
    await run(
        db,
        calls.insert_event_stmt(call_id, "initiated", None, NOW),
        calls.insert_event_stmt(call_id, "answered", {"provider": "echo"}, NOW + 1),
        calls.set_voice_provider_stmt(call_id, "deepgram"),
        calls.insert_event_stmt(call_id, "ended", {"reason": "stop"}, NOW + 1),
        calls.finish_call_stmt(call_id, "completed", 42, NOW + 42, "echo", "hello", 0.0),
    )
    events = await calls.list_events(db, call_id)
    assert [e.event_type for e in events] == ["initiated", "answered", "ended"]
    assert events[0].data() is None and events[1].data() == {"provider": "echo"}
    done = await calls.get_call(db, call_id)
    assert done is not None
    assert (
        done.status,
        done.duration_seconds,
        done.ended_at,
        done.voice_provider_used,
        done.transcription,
        done.cost_total,
    ) == ("completed", 42, NOW + 42, "echo", "hello", 0.0)
    setup = await calls.load_call_setup(db, call_id)
    assert setup is not None and setup[0] == done and setup[1] == demo.agent
    assert setup[2] == demo.workspace and setup[3] == demo.number
    assert await calls.load_call_setup(db, "nope") is None
    assert await calls.get_call(db, "nope") is None


def test_call_statement_validation() -> None:
    with pytest.raises(ValueError, match="status"):
        calls.finish_call_stmt("c", "done", 1, 1, "echo", None, None)
    with pytest.raises(ValueError, match="direction"):
        calls.insert_call_stmt(
            call_id="c",
            workspace_id="w",
            agent_id="a",
            phone_number_id="p",
            caller_number="+1",
            direction="sideways",
            status="ringing",
            voice_provider_used="echo",
            started_at=1,
        )


async def test_settings_reads(db: Database, demo: NumberRoute) -> None:
    tiers = await settings.list_tiers(db)
    assert [t.tier_name for t in tiers] == ["starter", "professional", "enterprise"]
    pro = await settings.get_tier(db, "professional")
    assert pro is not None and (pro.max_agents, pro.max_phone_numbers, pro.monthly_fee) == (5, 3, 99.99)
    assert pro.feature_list() == ["basic_analytics", "advanced_analytics", "priority_support"]
    assert await settings.get_tier(db, "gold") is None
    assert await settings.setting_value(db, "default_subscription_tier") == "starter"
    flags = await settings.setting_value(db, "feature_flags")
    assert flags == {"advanced_analytics": True, "custom_domains": False}
    assert await settings.setting_value(db, "missing", 7) == 7
    assert await settings.markup_percentage(db) == 20.0
    trial = await settings.get_platform_setting(db, "trial_duration_days")
    assert trial is not None and trial.parsed() == 14
    assert len(await settings.list_platform_settings(db)) == 5
    assert await settings.get_billing_settings(db, demo.workspace.id) is None
