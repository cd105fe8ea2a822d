"""Which providers are due for an active probe (a cheap connect-and-close); the I/O is the gateway's.

Passive observations only exist where calls go, so a provider that gets no traffic (because it
tripped, or because the strategy ranks it last) never shows that it recovered, and its latency
EWMA goes stale. Probes fill that gap. The gateway reports a probe's outcome through the same
``HealthBoard.observe_connect`` / ``observe_error`` calls as a real call, and must win
``HealthBoard.try_acquire_trial`` before probing a half-open provider (the probe then *is* the
trial, sparing a caller).
"""

from __future__ import annotations

from collections.abc import Iterable

from routing.model import HealthView


class ProbePlan:
    """Probe bookkeeping for one gateway process.

    A ``(provider, region)`` target is due when all hold:

    - it was never probed, or its last probe started ≥ ``interval_s`` ago;
    - it saw no passive observation for ``interval_s`` (live traffic is evidence enough);
    - its breaker is not open (still cooling down) and no half-open trial is in flight.

    At most ``max_per_tick`` targets are returned, least recently probed first, so a fleet of
    providers is probed gradually rather than in one burst.
    """

    def __init__(self, interval_s: float = 30.0, max_per_tick: int = 2) -> None:
        if interval_s <= 0 or max_per_tick < 1:
            raise ValueError("ProbePlan: need interval_s > 0 and max_per_tick >= 1")
        self.interval_s = interval_s
        self.max_per_tick = max_per_tick
        self._last_probe: dict[tuple[str, str], float] = {}

    def due(self, targets: Iterable[tuple[str, str]], view: HealthView, now: float) -> list[tuple[str, str]]:
        """Targets to probe now; targets no longer listed are forgotten."""
        wanted = list(dict.fromkeys(targets))
        listed = set(wanted)
        self._last_probe = {t: at for t, at in self._last_probe.items() if t in listed}
        ready: list[tuple[float, tuple[str, str]]] = []
        for target in wanted:
            last = self._last_probe.get(target)
            if last is not None and now - last < self.interval_s:
                continue
            health = view.get(*target)
            if health.breaker == "open" or health.trial_busy:
                continue
            if health.idle_s is not None and health.idle_s < self.interval_s:
                continue
            ready.append((last if last is not None else float("-inf"), target))
        ready.sort(key=lambda item: item[0])
        return [target for _, target in ready[: self.max_per_tick]]

    def mark_probed(self, provider: str, region: str, now: float) -> None:
        """Record that a probe of ``(provider, region)`` started at ``now``."""
        self._last_probe[(provider, region)] = now
