"""Per-call cost of the router and health board (run: .venv/bin/python tests/routing/bench_routing.py).

Not collected by pytest; prints microseconds per operation on this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from functools import partial

from providers.registry import KNOWN_PROVIDERS
from routing import (
    AgentInfo,
    CallContext,
    HealthBoard,
    PlatformProvider,
    RoutingSnapshot,
    Strategy,
    WorkspaceProvider,
    route,
)

NAMES = sorted(KNOWN_PROVIDERS)
CUSTOM = {
    "rules": [
        {"caller_prefix": ["+44", "+33"], "providers": ["openai", "deepgram"]},
        {"time_window": "22:00-06:00", "days": ["sat", "sun"], "providers": ["vapi"]},
        {"agent_id": "agent-1", "providers": ["elevenlabs", "retell"]},
    ],
    "default": ["deepgram"],
}


def per_op_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    board = HealthBoard()
    for i, name in enumerate(NAMES):
        for region in ("us", "eu"):
            for k in range(50):
                board.observe_connect(name, region, 100.0 + i * 10, now=k * 0.5)
                if k % 7 == i % 7:
                    board.observe_error(name, region, "timeout", now=k * 0.5)
    now = 25.0
    view = board.view(now)
    platform = [PlatformProvider(n, True, {}, i, True, 0.01 * (i + 1)) for i, n in enumerate(NAMES)]
    workspace = [WorkspaceProvider("vapi", False, True, {"cost_per_unit": 0.001}, True)]
    agent = AgentInfo("agent-1", "elevenlabs", {"voice_id": "v", "providers": {n: {} for n in NAMES}})
    call = CallContext("+14155550100", datetime(2024, 6, 3, 10, 0), "us")
    print(f"board.view (7 providers x 2 regions): {per_op_us(lambda: board.view(now), 5000):.1f} us")
    for name in ("specific", "cost_optimized", "quality_first", "auto", "custom"):
        strategy = Strategy(name, CUSTOM if name == "custom" else {}, True)  # type: ignore[arg-type]
        snap = RoutingSnapshot(platform, workspace, strategy, agent, view, call)
        print(f"route({name}): {per_op_us(partial(route, snap), 5000):.1f} us")
    observe_us = per_op_us(lambda: board.observe_connect("deepgram", "us", 90.0, now), 50000)
    print(f"observe_connect: {observe_us:.2f} us")
    print(f"to_rows (14 rows): {per_op_us(lambda: board.to_rows(1_700_000_000, now), 2000):.1f} us")


if __name__ == "__main__":
    main()
