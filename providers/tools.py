"""Client-side tool calls answered by the gateway itself: arguments in, static configured result out.

Providers that run tools on the client (Deepgram, OpenAI Realtime) ask us for a result; voicegw has
no tool runtime, so ``config.tools`` maps each name to a fixed answer, and the hang-up tool is
answered with a fixed acknowledgement before the adapter reports ``Hangup``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

HANGUP_RESULT: dict[str, Any] = {"status": "ending call"}
HANGUP_TEXT = '{"status":"ending call"}'


def tool_arguments(raw: Any) -> dict[str, Any]:
    """A call's JSON-encoded arguments as a dict; malformed or non-object arguments become ``{}``."""
    try:
        arguments = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {}
    return arguments if isinstance(arguments, dict) else {}


def tool_answer(tools: Mapping[str, Any], name: str, hangup_tool: str) -> tuple[Any, str]:
    """The result for ``name`` and its text form: the hang-up acknowledgement, the configured static
    result, or an error for an unknown tool."""
    if name == hangup_tool:
        return dict(HANGUP_RESULT), HANGUP_TEXT
    result = tools[name] if name in tools else {"error": f"unknown tool {name!r}"}
    return result, result if isinstance(result, str) else orjson.dumps(result).decode()
