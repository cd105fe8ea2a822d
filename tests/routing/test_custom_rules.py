"""Custom-strategy rules: matching as documented, and validation messages with field paths."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.model import CallContext
from routing.rules import parse_custom_config, validate_custom_config

MONDAY = datetime(2024, 6, 3)  # a Monday


def call(caller: str = "+14155550100", when: datetime = MONDAY) -> CallContext:
    return CallContext(caller, when)


def pick(config: dict[str, Any], c: CallContext, agent_id: str = "agent-1") -> tuple[str, ...] | None:
    selected = parse_custom_config(config).select(c, agent_id)
    return selected[1] if selected else None


@pytest.mark.parametrize(
    ("prefix", "caller", "hit"),
    [
        ("+1415", "+14155550100", True),
        ("1415", "+14155550100", True),
        ("+1415", "14155550100", True),
        ("+1650", "+14155550100", False),
        (["+44", "+1415"], "+14155550100", True),
        ("+1", "anonymous", False),
        ("+1", "", False),
    ],
)
def test_caller_prefix(prefix: Any, caller: str, hit: bool) -> None:
    config = {"rules": [{"caller_prefix": prefix, "providers": ["deepgram"]}], "default": ["openai"]}
    assert pick(config, call(caller)) == (("deepgram",) if hit else ("openai",))


@pytest.mark.parametrize(
    ("window", "hhmm", "hit"),
    [
        ("09:00-17:00", "09:00", True),
        ("09:00-17:00", "16:59", True),
        ("09:00-17:00", "17:00", False),
        ("09:00-17:00", "08:59", False),
        ("22:00-06:00", "23:30", True),
        ("22:00-06:00", "00:00", True),
        ("22:00-06:00", "05:59", True),
        ("22:00-06:00", "06:00", False),
        ("22:00-06:00", "12:00", False),
        ("18:00-24:00", "23:59", True),
        ("00:00-24:00", "00:00", True),
        ("09:00 \u2013 17:00", "12:00", True),
    ],
)
def test_time_window_including_midnight_wrap(window: str, hhmm: str, hit: bool) -> None:
    hours, minutes = map(int, hhmm.split(":"))
    when = MONDAY.replace(hour=hours, minute=minutes)
    config = {"rules": [{"time_window": window, "providers": ["deepgram"]}]}
    assert pick(config, call(when=when)) == (("deepgram",) if hit else None)


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, 1439), length=st.integers(1, 1439), probe=st.integers(0, 1439))
def test_time_window_property(start: int, length: int, probe: int) -> None:
    """A window of ``length`` minutes from ``start`` covers exactly those minutes, mod 24 h."""
    end = (start + length) % 1440
    end_text = "24:00" if end == 0 else f"{end // 60:02d}:{end % 60:02d}"
    window = f"{start // 60:02d}:{start % 60:02d}-{end_text}"
    config = {"rules": [{"time_window": window, "providers": ["deepgram"]}]}
    when = MONDAY + timedelta(minutes=probe)
    expected = (probe - start) % 1440 < length
    assert (pick(config, call(when=when)) is not None) == expected


def test_days_of_week_any_case_and_full_names() -> None:
    config = {"rules": [{"days": ["Sat", "sunday"], "providers": ["vapi"]}], "default": ["openai"]}
    assert pick(config, call(when=MONDAY + timedelta(days=5))) == ("vapi",)  # Saturday
    assert pick(config, call(when=MONDAY + timedelta(days=6))) == ("vapi",)  # Sunday
    assert pick(config, call(when=MONDAY)) == ("openai",)


def test_agent_id_and_all_conditions_must_hold() -> None:
    rule = {
        "agent_id": ["agent-1", "agent-9"],
        "caller_prefix": "+1",
        "days": ["mon"],
        "time_window": "09:00-10:00",
        "providers": ["retell"],
    }
    config = {"rules": [rule], "default": ["openai"]}
    at_930 = MONDAY.replace(hour=9, minute=30)
    assert pick(config, call(when=at_930), "agent-9") == ("retell",)
    assert pick(config, call(when=at_930), "agent-2") == ("openai",)
    assert pick(config, call("+44207", at_930), "agent-1") == ("openai",)
    assert pick(config, call(when=at_930 + timedelta(days=1)), "agent-1") == ("openai",)


def test_first_matching_rule_wins_and_no_default_means_none() -> None:
    config = {
        "rules": [
            {"name": "uk", "caller_prefix": "+44", "providers": ["openai"]},
            {"caller_prefix": "+1", "providers": ["deepgram"]},
            {"providers": ["vapi"]},
        ]
    }
    parsed = parse_custom_config(config)
    assert parsed.select(call("+442071234567"), "a") == ("rules[0] 'uk'", ("openai",))
    assert parsed.select(call("+14155550100"), "a") == ("rules[1]", ("deepgram",))
    assert parsed.select(call("+33123"), "a") == ("rules[2]", ("vapi",))
    assert (
        parse_custom_config({"rules": [{"agent_id": "x", "providers": ["vapi"]}]}).select(call(), "a") is None
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([], "config: expected an object, got list"),
        ({}, "rules: a custom strategy needs at least one rule or a default order"),
        ({"rulez": []}, "rulez: unknown field (expected 'rules' and/or 'default')"),
        ({"rules": {}}, "rules: expected a list, got dict"),
        ({"rules": ["x"]}, "rules[0]: expected an object, got str"),
        ({"rules": [{"caller_prefix": "+1"}]}, "rules[0].providers: required"),
        ({"rules": [{"providers": []}]}, "rules[0].providers: expected a non-empty list of provider names"),
        ({"rules": [{"providers": ["playht"]}]}, "rules[0].providers[0]: unknown provider 'playht'"),
        ({"rules": [{"providers": ["vapi", "vapi"]}]}, "rules[0].providers[1]: provider 'vapi' listed twice"),
        ({"rules": [{"providers": ["vapi"], "when": "x"}]}, "rules[0].when: unknown field"),
        (
            {"rules": [{"providers": ["vapi"]}, {"providers": ["vapi"], "time_window": "25:00-01:00"}]},
            "rules[1].time_window: expected 'HH:MM-HH:MM' with 00:00..24:00, got '25:00-01:00'",
        ),
        (
            {"rules": [{"providers": ["vapi"], "time_window": "9-17"}]},
            "rules[0].time_window: expected 'HH:MM-HH:MM' with 00:00..24:00, got '9-17'",
        ),
        (
            {"rules": [{"providers": ["vapi"], "time_window": "09:00"}]},
            "rules[0].time_window: expected 'HH:MM-HH:MM', got '09:00'",
        ),
        (
            {"rules": [{"providers": ["vapi"], "time_window": "24:00-01:00"}]},
            "rules[0].time_window: a window cannot start at 24:00",
        ),
        (
            {"rules": [{"providers": ["vapi"], "time_window": "10:00-10:00"}]},
            "rules[0].time_window: empty window '10:00-10:00' (omit time_window to match all day)",
        ),
        (
            {"rules": [{"providers": ["vapi"], "time_window": 900}]},
            "rules[0].time_window: expected 'HH:MM-HH:MM', got 900",
        ),
        ({"rules": [{"providers": ["vapi"], "days": "mon"}]}, "rules[0].days: expected a non-empty list"),
        ({"rules": [{"providers": ["vapi"], "days": ["mon", "funday"]}]}, "rules[0].days[1]: unknown day"),
        (
            {"rules": [{"providers": ["vapi"], "caller_prefix": ["+1", "+1-415"]}]},
            "rules[0].caller_prefix[1]: expected digits with an optional leading '+', got '+1-415'",
        ),
        (
            {"rules": [{"providers": ["vapi"], "caller_prefix": []}]},
            "rules[0].caller_prefix: expected a string",
        ),
        (
            {"rules": [{"providers": ["vapi"], "agent_id": ["a", ""]}]},
            "rules[0].agent_id[1]: expected a non-empty",
        ),
        ({"rules": [{"providers": ["vapi"], "name": 3}]}, "rules[0].name: expected a non-empty string"),
        ({"default": "vapi"}, "default: expected a non-empty list of provider names"),
        ({"default": ["vapi", {"x": 1}]}, "default[1]: unknown provider {'x': 1}"),
    ],
)
def test_validation_messages_carry_the_field_path(config: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_custom_config(config)
    assert str(info.value).startswith(message)


def test_valid_config_passes() -> None:
    validate_custom_config(
        {
            "rules": [
                {
                    "name": "nights",
                    "caller_prefix": ["+1415", "44"],
                    "time_window": "22:00-06:00",
                    "days": ["fri", "Saturday"],
                    "agent_id": "agent-1",
                    "providers": ["deepgram", "elevenlabs"],
                }
            ],
            "default": ["elevenlabs"],
        }
    )
