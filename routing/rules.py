"""Rules of the ``custom`` strategy: validation (at provisioning) and matching (at call time).

Config shape (``workspace_provider_strategies.config`` when ``strategy='custom'``)::

    {
      "rules": [
        {"name": "west coast office hours",            # optional label, shown in reasons
         "caller_prefix": ["+1415", "+1650"],           # string or list; '+' is optional
         "time_window": "09:00-17:00",                  # local time, start inclusive, end exclusive
         "days": ["mon", "tue", "wed", "thu", "fri"],   # 3-letter or full names, any case
         "agent_id": "agent_123",                       # string or list
         "providers": ["deepgram", "elevenlabs"]},      # the order to try
        ...
      ],
      "default": ["elevenlabs", "openai"]               # order when no rule matches (optional)
    }

A rule matches when every condition it states holds (a rule stating none matches every call);
the first matching rule wins. A window whose start is after its end wraps midnight
(``22:00-06:00``); ``24:00`` is allowed as an end. Prefixes compare digits only, so ``+1415`` and
``1415`` both match ``+14155551234``. Error paths count rules from 0 (``rules[0]`` is the first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from providers.registry import KNOWN_PROVIDERS
from routing.model import CallContext

_RULE_FIELDS = frozenset({"name", "caller_prefix", "time_window", "days", "agent_id", "providers"})
_TOP_FIELDS = frozenset({"rules", "default"})
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {**{d: i for i, d in enumerate(_DAYS)}, **{d[:3]: i for i, d in enumerate(_DAYS)}}
_HHMM = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_WINDOW_SEP = re.compile(r"\s*[-\u2013]\s*")  # '-' or an en dash
_PREFIX = re.compile(r"^\+?\d+$")


@dataclass(frozen=True, slots=True)
class CustomRule:
    """One compiled rule; ``None`` conditions are not checked. Times are minutes after midnight."""

    label: str
    providers: tuple[str, ...]
    caller_prefixes: tuple[str, ...] | None = None
    window: tuple[int, int] | None = None
    days: frozenset[int] | None = None
    agent_ids: frozenset[str] | None = None

    def matches(self, call: CallContext, agent_id: str) -> bool:
        if self.agent_ids is not None and agent_id not in self.agent_ids:
            return False
        if self.days is not None and call.local_time.weekday() not in self.days:
            return False
        if self.window is not None:
            minute = call.local_time.hour * 60 + call.local_time.minute
            start, end = self.window
            inside = start <= minute < end if start < end else (minute >= start or minute < end)
            if not inside:
                return False
        if self.caller_prefixes is not None:
            digits = call.caller_number.removeprefix("+")
            if not any(digits.startswith(p) for p in self.caller_prefixes):
                return False
        return True


@dataclass(frozen=True, slots=True)
class CustomConfig:
    rules: tuple[CustomRule, ...]
    default: tuple[str, ...] | None

    def select(self, call: CallContext, agent_id: str) -> tuple[str, tuple[str, ...]] | None:
        """``(why, provider order)`` of the first matching rule, else the default, else ``None``."""
        for rule in self.rules:
            if rule.matches(call, agent_id):
                return rule.label, rule.providers
        if self.default is not None:
            return "default order", self.default
        return None


def validate_custom_config(config: Mapping[str, Any], known: frozenset[str] = KNOWN_PROVIDERS) -> None:
    """Raise ``ValueError("<field path>: <problem>")`` unless ``config`` is a valid custom config."""
    parse_custom_config(config, known)


def parse_custom_config(config: Mapping[str, Any], known: frozenset[str] = KNOWN_PROVIDERS) -> CustomConfig:
    """Compile a custom-strategy config, raising ``ValueError`` with a field path on any problem."""
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected an object, got {type(config).__name__}")
    for key in config:
        if key not in _TOP_FIELDS:
            raise ValueError(f"{key}: unknown field (expected 'rules' and/or 'default')")
    raw_rules = config.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ValueError(f"rules: expected a list, got {type(raw_rules).__name__}")
    rules = tuple(_parse_rule(raw, f"rules[{i}]", known) for i, raw in enumerate(raw_rules))
    default = _parse_providers(config["default"], "default", known) if "default" in config else None
    if not rules and default is None:
        raise ValueError("rules: a custom strategy needs at least one rule or a default order")
    return CustomConfig(rules, default)


def _parse_rule(raw: Any, path: str, known: frozenset[str]) -> CustomRule:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected an object, got {type(raw).__name__}")
    for key in raw:
        if key not in _RULE_FIELDS:
            raise ValueError(f"{path}.{key}: unknown field")
    if "providers" not in raw:
        raise ValueError(f"{path}.providers: required")
    name = raw.get("name")
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise ValueError(f"{path}.name: expected a non-empty string")
    return CustomRule(
        label=f"{path} {name!r}" if name else path,
        providers=_parse_providers(raw["providers"], f"{path}.providers", known),
        caller_prefixes=_parse_prefixes(raw["caller_prefix"], f"{path}.caller_prefix")
        if "caller_prefix" in raw
        else None,
        window=_parse_window(raw["time_window"], f"{path}.time_window") if "time_window" in raw else None,
        days=_parse_days(raw["days"], f"{path}.days") if "days" in raw else None,
        agent_ids=frozenset(_strings(raw["agent_id"], f"{path}.agent_id")) if "agent_id" in raw else None,
    )


def _strings(raw: Any, path: str) -> list[str]:
    """A non-empty string or a non-empty list of non-empty strings."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a string or a non-empty list of strings")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            where = path if isinstance(raw, str) else f"{path}[{i}]"
            raise ValueError(f"{where}: expected a non-empty string, got {item!r}")
    return items


def _parse_providers(raw: Any, path: str, known: frozenset[str]) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{path}: expected a non-empty list of provider names")
    seen: list[str] = []
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in known:
            raise ValueError(f"{path}[{i}]: unknown provider {name!r} (known: {', '.join(sorted(known))})")
        if name in seen:
            raise ValueError(f"{path}[{i}]: provider {name!r} listed twice")
        seen.append(name)
    return tuple(seen)


def _parse_prefixes(raw: Any, path: str) -> tuple[str, ...]:
    items = _strings(raw, path)
    for i, prefix in enumerate(items):
        if not _PREFIX.match(prefix):
            where = path if isinstance(raw, str) else f"{path}[{i}]"
            raise ValueError(f"{where}: expected digits with an optional leading '+', got {prefix!r}")
    return tuple(p.removeprefix("+") for p in items)


def _parse_window(raw: Any, path: str) -> tuple[int, int]:
    parts = _WINDOW_SEP.split(raw.strip()) if isinstance(raw, str) else []
    if len(parts) != 2:
        raise ValueError(f"{path}: expected 'HH:MM-HH:MM', got {raw!r}")
    start, end = (_minutes(p, path, raw) for p in parts)
    if start == 1440:
        raise ValueError(f"{path}: a window cannot start at 24:00, got {raw!r}")
    if start == end:
        raise ValueError(f"{path}: empty window {raw!r} (omit time_window to match all day)")
    return start, end


def _minutes(text: str, path: str, raw: str) -> int:
    m = _HHMM.match(text)
    if m is None:
        raise ValueError(f"{path}: expected 'HH:MM-HH:MM' with 00:00..24:00, got {raw!r}")
    minutes = int(m.group(1)) * 60 + int(m.group(2))
    if minutes > 1440:
        raise ValueError(f"{path}: expected 'HH:MM-HH:MM' with 00:00..24:00, got {raw!r}")
    return minutes


def _parse_days(raw: Any, path: str) -> frozenset[int]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise ValueError(f"{path}: expected a non-empty list of day names like ['mon', 'fri']")
    days: set[int] = set()
    for i, day in enumerate(raw):
        index = _DAY_INDEX.get(day.strip().lower()) if isinstance(day, str) else None
        if index is None:
            raise ValueError(f"{path}[{i}]: unknown day {day!r} (use mon..sun or full names)")
        days.add(index)
    return frozenset(days)
