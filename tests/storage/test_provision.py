"""Provisioning: idempotent, validated with field paths, all-or-nothing, tier limits, secrets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from storage import provider_configs, tenancy
from storage.db import Database
from storage.provision import ProvisionError, demo_document, provision, provision_demo, provision_file
from storage.secrets import SecretBox
from tests.storage.conftest import NOW, dump_tables


def full_document() -> dict[str, Any]:
    return {
        "client_users": [
            {"email": "owner@acme.test", "name": "Owner", "password_hash": "argon2$x"},
            {"email": "staff@acme.test", "name": "Staff"},
        ],
        "platform_providers": [
            {
                "provider": "elevenlabs",
                "api_key": "sk-platform-11",
                "priority": 1,
                "cost_per_unit": 0.08,
                "config": {"region": "us"},
            },
            {"provider": "deepgram", "api_key": "dg-platform", "priority": 2, "cost_per_unit": 0.05},
        ],
        "workspaces": [
            {
                "id": "ws-acme",
                "name": "Acme Dental",
                "owner": "owner@acme.test",
                "industry": "dental",
                "subscription_tier": "starter",
                "timezone": "America/Los_Angeles",
                "members": [{"email": "staff@acme.test", "role": "viewer", "invited_by": "owner@acme.test"}],
                "phone_numbers": [{"number": "+14155550100", "provider": "twilio", "provider_sid": "PN1"}],
                "agents": [
                    {
                        "name": "Front desk",
                        "phone_number": "+14155550100",
                        "voice_provider": "elevenlabs",
                        "voice_config": {"voice_id": "v1"},
                        "config": {"greeting": "Hi"},
                        "status": "live",
                    }
                ],
                "provider_configs": [
                    {"provider": "deepgram", "api_key": "dg-own", "config": {"model": "nova"}},
                    {"provider": "elevenlabs"},
                ],
                "strategy": {
                    "strategy": "custom",
                    "fallback_enabled": False,
                    "config": {
                        "rules": [{"caller_prefix": "+1415", "providers": ["deepgram"]}],
                        "default": ["elevenlabs"],
                    },
                },
                "billing": {
                    "usage_limit_monthly": 100,
                    "auto_pause_on_limit": True,
                    "billing_email": "b@acme.test",
                },
            }
        ],
    }


async def test_provisioning_twice_changes_nothing(db: Database, box: SecretBox) -> None:
    first = await provision(db, full_document(), box, now=NOW)
    assert first.created > 0 and first.updated == 0
    before = await dump_tables(db)
    second = await provision(db, full_document(), box, now=NOW + 1000)
    assert not second.changed and second.unchanged == first.created
    assert await dump_tables(db) == before


async def test_provisioned_rows(db: Database, box: SecretBox) -> None:
    await provision(db, full_document(), box, now=NOW)
    route = await tenancy.resolve_number(db, "+14155550100")
    assert route is not None and route.agent is not None
    assert route.workspace.id == "ws-acme" and route.workspace.timezone == "America/Los_Angeles"
    assert route.agent.activated_at == NOW and route.agent.voice_config_dict() == {"voice_id": "v1"}
    inputs = await provider_configs.load_routing_inputs(db, "ws-acme")
    assert [p.provider for p in inputs.platform] == ["elevenlabs", "deepgram"]
    assert box.decrypt(inputs.platform[0].api_key_encrypted) == "sk-platform-11"
    own = {w.provider: w for w in inputs.workspace}
    assert own["deepgram"].uses_platform_key == 0 and own["deepgram"].api_key_encrypted is not None
    assert box.decrypt(own["deepgram"].api_key_encrypted) == "dg-own"
    assert own["elevenlabs"].uses_platform_key == 1 and own["elevenlabs"].api_key_encrypted is None
    assert inputs.strategy is not None and inputs.strategy.fallback_enabled == 0
    assert inputs.strategy.config_dict()["default"] == ["elevenlabs"]
    dump = json.dumps([list(map(str, r)) for rows in (await dump_tables(db)).values() for r in rows])
    assert "sk-platform-11" not in dump and "dg-own" not in dump  # plaintext never stored
    members = await tenancy.list_members(db, "ws-acme")
    assert sorted(m.role for m in members) == ["owner", "viewer"]


async def test_changes_update_in_place_keeping_created_at(db: Database, box: SecretBox) -> None:
    await provision(db, full_document(), box, now=NOW)
    doc = full_document()
    doc["workspaces"][0]["agents"][0]["status"] = "paused"
    doc["platform_providers"][0]["api_key"] = "sk-rotated"
    result = await provision(db, doc, box, now=NOW + 50)
    assert result.updated == 2 and result.created == 0
    agent = (await tenancy.list_agents(db, "ws-acme"))[0]
    assert (agent.status, agent.created_at, agent.updated_at) == ("paused", NOW, NOW + 50)
    assert agent.activated_at == NOW
    platform = await provider_configs.list_platform_configs(db)
    assert box.decrypt(platform[0].api_key_encrypted) == "sk-rotated" and platform[0].created_at == NOW


async def test_trial_days_count_from_first_provisioning(db: Database, box: SecretBox) -> None:
    await provision_demo(db, box, now=NOW)
    before = await dump_tables(db)
    assert not (await provision_demo(db, box, now=NOW + 86400 * 30)).changed
    assert await dump_tables(db) == before
    ws = (await tenancy.list_workspaces(db))[0]
    assert ws.trial_ends_at == NOW + 3650 * 86400


def bad(path: list[Any], value: Any) -> dict[str, Any]:
    doc = full_document()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            bad(["workspaces", 0, "agents", 0, "status"], "on"),
            "workspaces[0].agents[0].status: must be one of draft,testing,live,paused",
        ),
        (
            bad(["workspaces", 0, "phone_numbers", 0, "number"], "4155550100"),
            "workspaces[0].phone_numbers[0].number: is not valid",
        ),
        (bad(["workspaces", 0, "name"], KeyError), "workspaces[0].name: is required"),
        (bad(["workspaces", 0, "agentz"], []), "workspaces[0].agentz: unknown field"),
        (
            bad(["platform_providers", 1, "priority"], "high"),
            "platform_providers[1].priority: must be an integer",
        ),
        (
            bad(["workspaces", 0, "subscription_tier"], "gold"),
            "workspaces[0].subscription_tier: must be one of starter,professional,enterprise",
        ),
        (
            bad(["workspaces", 0, "strategy", "config", "rules", 0, "providers"], "deepgram"),
            "workspaces[0].strategy.config.rules[0].providers",
        ),
        (bad(["client_users", 1, "email"], "owner@acme.test"), "client_users[1].email: duplicate email"),
    ],
)
async def test_invalid_document_is_refused_with_path(
    db: Database, box: SecretBox, doc: Any, message: str
) -> None:
    before = await dump_tables(db)
    with pytest.raises(ProvisionError) as info:
        await provision(db, doc, box, now=NOW)
    assert str(info.value).startswith(message), str(info.value)
    assert await dump_tables(db) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["workspaces"][0].update(owner="ghost@acme.test"),
            "workspaces[0].owner: no client user with email 'ghost@acme.test'",
        ),
        (
            lambda d: d["workspaces"][0]["agents"][0].update(phone_number="+14155550199"),
            "workspaces[0].agents[0].phone_number: +14155550199 is not a number of this workspace",
        ),
        (
            lambda d: d["workspaces"][0]["agents"].append(
                {"name": "Second", "voice_provider": "echo"}
            ),  # starter allows 1 agent
            "workspaces[0].agents: 2 agents exceed the starter tier limit of 1",
        ),
        (
            lambda d: d["workspaces"][0]["phone_numbers"].append(
                {"number": "+14155550101", "provider": "telnyx"}
            ),
            "workspaces[0].phone_numbers: 2 phone_numbers exceed the starter tier limit of 1",
        ),
    ],
)
async def test_database_dependent_errors_write_nothing(
    db: Database, box: SecretBox, change: Any, message: str
) -> None:
    await provision_demo(db, box, now=NOW)  # something already there that must survive unchanged
    before = await dump_tables(db)
    doc = full_document()
    change(doc)
    with pytest.raises(ProvisionError) as info:
        await provision(db, doc, box, now=NOW)
    assert str(info.value) == message
    assert await dump_tables(db) == before


async def test_number_of_another_workspace_is_refused(db: Database, box: SecretBox) -> None:
    await provision_demo(db, box, now=NOW)
    doc = full_document()
    doc["workspaces"][0]["phone_numbers"][0]["number"] = "+15550001111"
    doc["workspaces"][0]["agents"][0]["phone_number"] = "+15550001111"
    expected = r"workspaces\[0\].phone_numbers\[0\].number: .* another workspace"
    with pytest.raises(ProvisionError, match=expected):
        await provision(db, doc, box, now=NOW)


async def test_toml_and_json_files(db: Database, box: SecretBox, tmp_path: Path) -> None:
    toml = tmp_path / "tenant.toml"
    toml.write_text(
        '[[client_users]]\nemail = "t@x.test"\nname = "T"\n\n'
        '[[workspaces]]\nname = "T ws"\nowner = "t@x.test"\nsubscription_tier = "enterprise"\n\n'
        '[[workspaces.phone_numbers]]\nnumber = "+441234567890"\nprovider = "telnyx"\n\n'
        '[[workspaces.agents]]\nname = "A"\nphone_number = "+441234567890"\nvoice_provider = "echo"\n'
        'status = "testing"\n[workspaces.agents.voice_config]\nvoice = "x"\n'
    )
    assert (await provision_file(db, toml, box, now=NOW)).created == 5  # user, ws, member, number, agent
    route = await tenancy.resolve_number(db, "+441234567890")
    assert route is not None and route.agent is not None and route.agent.status == "testing"
    assert route.agent.activated_at is None and route.agent.voice_config_dict() == {"voice": "x"}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ProvisionError, match="not valid JSON"):
        await provision_file(db, broken, box, now=NOW)


def test_demo_document_shape() -> None:
    doc = demo_document()
    ws = doc["workspaces"][0]
    assert ws["subscription_tier"] in ("professional", "enterprise") and ws["status"] == "trial"
    assert sorted(n["number"] for n in ws["phone_numbers"]) == ["+15550001111", "+15550002222"]
    assert all(a["voice_provider"] == "echo" and a["status"] == "live" for a in ws["agents"])
    assert copy.deepcopy(doc) == doc
