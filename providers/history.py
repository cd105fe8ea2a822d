"""The transcript so far as one text variable, for providers that resume a failed-over call that way.

Bolna, Retell and Vapi take no structured history: the agent prompt references a variable
(``{{conversation_history}}``), so every one of them gets the same ``role: text`` lines.
"""

from __future__ import annotations

from collections.abc import Sequence

from providers.base import Transcript


def history_text(history: Sequence[Transcript]) -> str:
    """Final transcript entries, one ``role: text`` line each, oldest first."""
    return "\n".join(f"{t.role}: {t.text}" for t in history if t.final)
