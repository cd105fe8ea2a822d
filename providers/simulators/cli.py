"""Sub-commands of this package (placeholder until the package's owner fills it in)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds this package's sub-commands."""
