"""The health board: passive observations → per (provider, region) status and circuit breaker.

Pure and clock-injected: every method takes ``now`` (monotonic seconds, e.g. ``time.monotonic()``)
and, where rows are written or read, the wall clock in whole seconds. Nothing here sleeps, logs
or touches a socket, so tests drive time by hand.

Observations (call exactly one per event). A connect attempt is the unit of the error rate: it
ends in ``observe_connect`` (good) or ``observe_error`` (bad); a session that connected and later
drops adds one bad outcome, so a provider that drops every call sits at 50 %.

- ``observe_connect(latency_ms)``: a connect/handshake succeeded → good outcome, connect-latency
  EWMA; closes a half-open breaker.
- ``observe_first_audio(latency_ms)``: connect → first provider audio → first-audio EWMA only.
- ``observe_success``: a session ended cleanly (a hang-up) → fresh evidence, closes a half-open
  breaker, but no extra good outcome (its connect was already counted).
- ``observe_drop``: a live session ended abnormally (socket gone without ``Hangup``) → bad outcome.
- ``observe_error(kind)``: a classified ``ErrorKind`` (failed connect or fatal mid-call failure).
  ``auth``/``quota`` open the breaker at once; ``config`` is our fault, not the provider's, so it
  is kept as ``last_error`` only; the rest are bad outcomes. With ``key_source='workspace'`` an
  ``auth``/``quota`` error is about one workspace's own key, so it is kept as ``last_error`` only
  and never trips the platform-wide breaker.

Derived status (``HealthPolicy`` holds the numbers):

- ``down``: breaker open;
- ``degraded``: breaker half-open, or error rate ≥ 20 % over ≥ 5 outcomes in the window, or
  connect EWMA ≥ 2000 ms, or first-audio EWMA ≥ 3000 ms;
- ``healthy`` otherwise (also with no data).

EWMA: ``ewma = alpha * sample + (1 - alpha) * ewma`` with alpha 0.25 (the last ~8 samples carry
~90 % of the weight); the first sample seeds it. The error rate counts outcomes in 12 buckets of
5 s (the last 60 s), so memory per key is fixed.

Breaker: closed → open when the window holds ≥ 5 outcomes with ≥ 50 % bad, or at once on
``auth``/``quota``. After ``cooldown_s`` (30 s) it is half-open: ``try_acquire_trial`` grants ONE
lease (``trial_timeout_s``, 15 s, after which an unreported trial is granted again); every other
caller is refused, so concurrent calls don't pile onto a recovering provider. A good outcome
closes it and clears the window; a bad outcome re-opens it for another cooldown.

Sharing between gateway processes (``provider_health_status``, one row per provider and region
for the whole platform): the rule throughout is *the newest evidence wins*.

- ``to_rows`` publishes only this process's own evidence, with ``last_check`` = wall time of its
  latest observation (not of the write) and ``node``, ``breaker`` and ``open_until`` (wall
  seconds, while open) in ``details``. The writer should upsert a row only when its
  ``last_check`` is >= the stored one, so an older view never overwrites a newer one.
- ``merge_rows`` keeps, per provider and region, the newest foreign row as a *floor*: a
  ``down``/breaker-open row makes the provider ``down`` here until its ``open_until`` (or, if
  absent, ``last_check + remote_ttl_s``); a ``degraded`` row makes it at least ``degraded`` until
  ``last_check + remote_ttl_s``; a ``healthy`` row clears the floor.
- A floor applies only while it is newer than our own latest observation of that provider and
  region, so our own fresher evidence wins over it. Rows carrying our own ``node`` id are ignored.
  Floors never change our own breaker and are never re-published, so they cannot echo.

Only outcomes and latencies count as observations; a ``config`` error or a workspace-key
``auth``/``quota`` error says nothing about the provider and leaves ``last_check`` alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import ErrorKind
from routing.model import BreakerState, HealthStatus, HealthView, ProviderHealth

_KINDS = frozenset(k.value for k in ErrorKind)
_STATUS_RANK: dict[str, int] = {"healthy": 0, "degraded": 1, "down": 2}
_LAST_ERROR_MAX = 200
_NO_BUCKET = -(1 << 62)  # marks an empty slot; older than any real bucket index


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """The board's numbers; tests shrink the times."""

    window_s: float = 60.0
    bucket_s: float = 5.0
    latency_alpha: float = 0.25
    min_samples: int = 5
    trip_error_rate: float = 0.5
    degraded_error_rate: float = 0.2
    degraded_latency_ms: float = 2000.0
    degraded_first_audio_ms: float = 3000.0
    cooldown_s: float = 30.0
    trial_timeout_s: float = 15.0
    remote_ttl_s: float = 60.0
    immediate_trip_kinds: frozenset[str] = frozenset({ErrorKind.AUTH.value, ErrorKind.QUOTA.value})
    uncounted_kinds: frozenset[str] = frozenset({ErrorKind.CONFIG.value})

    def __post_init__(self) -> None:
        if self.bucket_s <= 0 or self.window_s < self.bucket_s:
            raise ValueError("HealthPolicy: need 0 < bucket_s <= window_s")
        if not 0 < self.latency_alpha <= 1:
            raise ValueError("HealthPolicy: latency_alpha must be in (0, 1]")


class _Window:
    """Good/bad outcome counts over the last ``n`` buckets (fixed memory)."""

    __slots__ = ("_bad", "_bucket_s", "_good", "_ids", "_n")

    def __init__(self, window_s: float, bucket_s: float) -> None:
        self._n = max(1, math.ceil(window_s / bucket_s))
        self._bucket_s = bucket_s
        self._ids = [_NO_BUCKET] * self._n
        self._good = [0] * self._n
        self._bad = [0] * self._n

    def add(self, now: float, good: bool) -> None:
        bucket = math.floor(now / self._bucket_s)
        slot = bucket % self._n
        if self._ids[slot] != bucket:
            self._ids[slot], self._good[slot], self._bad[slot] = bucket, 0, 0
        if good:
            self._good[slot] += 1
        else:
            self._bad[slot] += 1

    def counts(self, now: float) -> tuple[int, int]:
        """(good, bad) within the window ending at ``now``."""
        oldest = math.floor(now / self._bucket_s) - self._n
        good = bad = 0
        for i in range(self._n):
            if self._ids[i] > oldest:
                good += self._good[i]
                bad += self._bad[i]
        return good, bad

    def clear(self) -> None:
        self._ids = [_NO_BUCKET] * self._n


class _Track:
    """Own evidence and breaker for one (provider, region)."""

    __slots__ = (
        "breaker",
        "first_audio_ms",
        "last_error",
        "last_error_at",
        "last_observed",
        "latency_ms",
        "open_until",
        "trial_lease_until",
        "window",
    )

    def __init__(self, policy: HealthPolicy) -> None:
        self.window = _Window(policy.window_s, policy.bucket_s)
        self.latency_ms: float | None = None
        self.first_audio_ms: float | None = None
        self.last_observed: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.breaker: BreakerState = "closed"
        self.open_until = 0.0
        self.trial_lease_until: float | None = None

    def tick(self, now: float) -> None:
        """Lazy open → half-open once the cooldown has passed."""
        if self.breaker == "open" and now >= self.open_until:
            self.breaker = "half_open"
            self.trial_lease_until = None


@dataclass(frozen=True, slots=True)
class _Floor:
    """Another process's published view, adopted until ``expires_at`` (monotonic)."""

    status: HealthStatus
    breaker_open: bool
    observed_at: float
    expires_at: float
    error_rate: float
    latency_ms: float | None
    last_error: str | None


class HealthBoard:
    """Per (provider, region) health and circuit breakers for one gateway process.

    ``node_id`` names this process in published rows (e.g. ``"host:pid"``) so it can ignore its
    own rows when merging.
    """

    def __init__(self, policy: HealthPolicy | None = None, node_id: str = "local") -> None:
        self.policy = policy or HealthPolicy()
        self.node_id = node_id
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._floors: dict[tuple[str, str], _Floor] = {}

    # ---------------------------------------------------------------- observations

    def observe_connect(self, provider: str, region: str, latency_ms: float, now: float) -> None:
        track = self._track(provider, region, now)
        track.latency_ms = self._ewma(track.latency_ms, latency_ms)
        self._good(track, now)

    def observe_first_audio(self, provider: str, region: str, latency_ms: float, now: float) -> None:
        track = self._track(provider, region, now)
        track.first_audio_ms = self._ewma(track.first_audio_ms, latency_ms)

    def observe_success(self, provider: str, region: str, now: float) -> None:
        self._good(self._track(provider, region, now), now, count=False)

    def observe_drop(self, provider: str, region: str, now: float) -> None:
        track = self._track(provider, region, now)
        self._note_error(track, "drop: session ended without hang-up", now)
        self._bad(track, now, immediate=False)

    def observe_error(
        self,
        provider: str,
        region: str,
        kind: str,
        now: float,
        message: str = "",
        key_source: str = "platform",
    ) -> None:
        """A classified failure; ``kind`` is an ``ErrorKind`` value (``ValueError`` otherwise)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown error kind {kind!r} (expected one of {sorted(_KINDS)})")
        kind = str(kind)
        immediate = kind in self.policy.immediate_trip_kinds
        counted = kind not in self.policy.uncounted_kinds and not (immediate and key_source == "workspace")
        track = self._track(provider, region, now, evidence=counted)
        self._note_error(track, f"{kind}: {message}" if message else kind, now)
        if counted:
            self._bad(track, now, immediate=immediate)
        else:
            self._release(track)

    # ---------------------------------------------------------------- half-open trials

    def try_acquire_trial(self, provider: str, region: str, now: float) -> bool:
        """May this call use the provider now? Safe to call for every candidate before connecting.

        True for a closed breaker; for a half-open one, True for exactly one caller until it
        reports an outcome (or its lease of ``trial_timeout_s`` lapses); False when open or when a
        remote floor says down.
        """
        if self._remote_down(provider, region, now):
            return False
        track = self._tracks.get((provider, region))
        if track is None:
            return True
        track.tick(now)
        if track.breaker == "closed":
            return True
        if track.breaker == "open":
            return False
        if track.trial_lease_until is not None and now < track.trial_lease_until:
            return False
        track.trial_lease_until = now + self.policy.trial_timeout_s
        return True

    def release_trial(self, provider: str, region: str) -> None:
        """Give back a trial lease that was acquired but not used (e.g. the call ended first)."""
        track = self._tracks.get((provider, region))
        if track is not None:
            self._release(track)

    # ---------------------------------------------------------------- reading

    def view(self, now: float) -> HealthView:
        """Immutable snapshot for ``route()``, own evidence combined with applicable remote floors."""
        keys = set(self._tracks) | set(self._floors)
        return HealthView({key: self._health(key, now) for key in keys})

    def as_json(self, now: float) -> dict[str, Any]:
        """``GET /health/providers`` body: ``{"node", "providers": {provider: {region: {...}}}}``."""
        providers: dict[str, dict[str, Any]] = {}
        for (provider, region), h in sorted(self.view(now).entries.items()):
            track = self._tracks.get((provider, region))
            retry_in = (
                max(0.0, track.open_until - now) if track is not None and track.breaker == "open" else None
            )
            error_at = track.last_error_at if track is not None and h.source == "local" else None
            providers.setdefault(provider, {})[region] = {
                "status": h.status,
                "breaker": h.breaker,
                "source": h.source,
                "error_rate": round(h.error_rate, 4),
                "samples": h.samples,
                "latency_ms": _round(h.latency_ms),
                "first_audio_ms": _round(h.first_audio_ms),
                "last_error": h.last_error,
                "last_error_age_s": _round(now - error_at) if error_at is not None else None,
                "trial_busy": h.trial_busy,
                "retry_in_s": _round(retry_in),
            }
        return {"node": self.node_id, "providers": providers}

    def to_rows(self, now_wall_s: int, now: float) -> list[dict[str, Any]]:
        """``provider_health_status`` rows of this process's own evidence (see module docstring)."""
        rows = []
        for (provider, region), track in sorted(self._tracks.items()):
            if track.last_observed is None:
                continue
            track.tick(now)
            good, bad = track.window.counts(now)
            details: dict[str, Any] = {
                "node": self.node_id,
                "breaker": track.breaker,
                "samples": good + bad,
                "first_audio_ms": _round(track.first_audio_ms),
                "last_error": track.last_error,
            }
            if track.breaker == "open":
                details["open_until"] = round(now_wall_s + (track.open_until - now), 3)
            rows.append(
                {
                    "provider": provider,
                    "region": region,
                    "status": self._own_status(track, good, bad),
                    "last_check": int(now_wall_s - (now - track.last_observed)),
                    "error_rate": round(_rate(good, bad), 4),
                    "avg_latency": round(track.latency_ms) if track.latency_ms is not None else None,
                    "details": json.dumps(details, separators=(",", ":")),
                }
            )
        return rows

    def merge_rows(self, rows: Iterable[Mapping[str, Any]], now: float, now_wall_s: int) -> int:
        """Adopt other processes' rows as floors (module docstring); returns how many were adopted.

        Malformed rows are ignored rather than raised: one bad row must not stop the refresh loop.
        """
        adopted = 0
        for row in rows:
            parsed = self._parse_row(row, now, now_wall_s)
            if parsed is None:
                continue
            key, floor = parsed
            previous = self._floors.get(key)
            if previous is not None and _floor_rank(previous) >= _floor_rank(floor):
                continue  # older evidence, or as new but no worse
            if floor.status == "healthy" or floor.expires_at <= now:
                self._floors.pop(key, None)
            else:
                self._floors[key] = floor
                adopted += 1
        for key in [k for k, f in self._floors.items() if f.expires_at <= now]:
            del self._floors[key]
        return adopted

    # ---------------------------------------------------------------- internals

    def _track(self, provider: str, region: str, now: float, evidence: bool = True) -> _Track:
        key = (provider, region)
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(self.policy)
        track.tick(now)
        if evidence:
            track.last_observed = now
        return track

    def _ewma(self, current: float | None, sample: float) -> float:
        sample = max(0.0, float(sample))
        if current is None:
            return sample
        alpha = self.policy.latency_alpha
        return alpha * sample + (1.0 - alpha) * current

    def _good(self, track: _Track, now: float, count: bool = True) -> None:
        if track.breaker == "half_open":
            track.breaker = "closed"
            track.trial_lease_until = None
            track.window.clear()
        if count:
            track.window.add(now, good=True)

    def _bad(self, track: _Track, now: float, immediate: bool) -> None:
        track.window.add(now, good=False)
        if track.breaker == "half_open":
            self._open(track, now)
        elif track.breaker == "closed":
            good, bad = track.window.counts(now)
            total = good + bad
            if immediate or (total >= self.policy.min_samples and bad / total >= self.policy.trip_error_rate):
                self._open(track, now)

    def _open(self, track: _Track, now: float) -> None:
        track.breaker = "open"
        track.open_until = now + self.policy.cooldown_s
        track.trial_lease_until = None

    @staticmethod
    def _release(track: _Track) -> None:
        track.trial_lease_until = None

    @staticmethod
    def _note_error(track: _Track, text: str, now: float) -> None:
        track.last_error = text[:_LAST_ERROR_MAX]
        track.last_error_at = now

    def _own_status(self, track: _Track, good: int, bad: int) -> HealthStatus:
        p = self.policy
        if track.breaker == "open":
            return "down"
        if track.breaker == "half_open":
            return "degraded"
        total = good + bad
        if total >= p.min_samples and bad / total >= p.degraded_error_rate:
            return "degraded"
        if track.latency_ms is not None and track.latency_ms >= p.degraded_latency_ms:
            return "degraded"
        if track.first_audio_ms is not None and track.first_audio_ms >= p.degraded_first_audio_ms:
            return "degraded"
        return "healthy"

    def _floor(self, key: tuple[str, str], now: float) -> _Floor | None:
        """The foreign row in force: unexpired and newer than our own latest observation."""
        floor = self._floors.get(key)
        if floor is None or floor.expires_at <= now:
            return None
        track = self._tracks.get(key)
        if track is not None and track.last_observed is not None and track.last_observed >= floor.observed_at:
            return None
        return floor

    def _remote_down(self, provider: str, region: str, now: float) -> bool:
        floor = self._floor((provider, region), now)
        return floor is not None and (floor.status == "down" or floor.breaker_open)

    def _health(self, key: tuple[str, str], now: float) -> ProviderHealth:
        track = self._tracks.get(key)
        floor = self._floor(key, now)
        if track is not None:
            track.tick(now)
            good, bad = track.window.counts(now)
            status = self._own_status(track, good, bad)
            breaker = track.breaker
            error_rate, samples = _rate(good, bad), good + bad
            latency, first_audio, last_error = track.latency_ms, track.first_audio_ms, track.last_error
            idle = now - track.last_observed if track.last_observed is not None else None
            trial_busy = (
                breaker == "half_open"
                and track.trial_lease_until is not None
                and now < track.trial_lease_until
            )
        else:
            status, breaker, error_rate, samples = "healthy", "closed", 0.0, 0
            latency = first_audio = idle = None
            last_error, trial_busy = None, False
        source: str = "local"
        if floor is not None:
            if floor.breaker_open and breaker != "open":
                breaker, source = "open", "remote"
            if _STATUS_RANK[floor.status] > _STATUS_RANK[status]:
                status, source = floor.status, "remote"
                last_error = floor.last_error or last_error
            if samples == 0 and latency is None:  # no evidence of our own: show theirs
                error_rate, latency = floor.error_rate, floor.latency_ms
        if breaker == "open":
            status = "down"
        return ProviderHealth(
            status=status,
            breaker=breaker,
            error_rate=error_rate,
            samples=samples,
            latency_ms=latency,
            first_audio_ms=first_audio,
            last_error=last_error,
            trial_busy=trial_busy,
            idle_s=idle,
            source="remote" if source == "remote" else "local",
        )

    def _parse_row(
        self, row: Mapping[str, Any], now: float, now_wall_s: int
    ) -> tuple[tuple[str, str], _Floor] | None:
        try:
            provider, region, status = str(row["provider"]), str(row["region"]), row["status"]
            last_check = float(row["last_check"])
            raw_details = row.get("details")
            details = json.loads(raw_details) if isinstance(raw_details, str | bytes) else raw_details
            details = details if isinstance(details, Mapping) else {}
            error_rate = float(row.get("error_rate") or 0.0)
            latency = float(row["avg_latency"]) if row.get("avg_latency") is not None else None
        except (KeyError, TypeError, ValueError):
            return None
        if status not in _STATUS_RANK or not math.isfinite(last_check):
            return None
        error_rate = min(1.0, max(0.0, error_rate)) if math.isfinite(error_rate) else 0.0
        if latency is not None and not (math.isfinite(latency) and latency >= 0):
            latency = None
        node = str(details.get("node", "unknown"))
        if node == self.node_id:
            return None
        age = max(0.0, now_wall_s - last_check)
        breaker_open = details.get("breaker") == "open"
        open_until = details.get("open_until")
        if breaker_open and isinstance(open_until, int | float):
            expires_at = now + (float(open_until) - now_wall_s)
        else:
            expires_at = now + (self.policy.remote_ttl_s - age)
        last_error = details.get("last_error")
        floor = _Floor(
            status=status,
            breaker_open=breaker_open,
            observed_at=now - age,
            expires_at=expires_at,
            error_rate=error_rate,
            latency_ms=latency,
            last_error=f"{node}: {last_error}" if isinstance(last_error, str) else None,
        )
        return (provider, region), floor


def _floor_rank(floor: _Floor) -> tuple[float, int]:
    """Newer evidence first; at equal age the worse status."""
    return (floor.observed_at, _STATUS_RANK[floor.status] + floor.breaker_open)


def _rate(good: int, bad: int) -> float:
    total = good + bad
    return bad / total if total else 0.0


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None
