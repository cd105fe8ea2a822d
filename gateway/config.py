"""Gateway settings, read once from ``VOICEGW_*`` environment variables.

Every variable is listed in ``ENV_VARS`` (name, default, meaning); the README's configuration
table is generated from the same list, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_VARS: tuple[tuple[str, str, str], ...] = (
    ("VOICEGW_DB", "var/voicegw.db", "Database URL: a path, `sqlite:///path` or `postgresql://…`"),
    ("VOICEGW_HOST", "127.0.0.1", "Listen address of `voicegw serve`"),
    ("VOICEGW_PORT", "8080", "Listen port of `voicegw serve`"),
    (
        "VOICEGW_INTERNAL_PORT",
        "",
        "Serve /health, /ready, /metrics, /health/providers on this port too (and only there if set)",
    ),
    (
        "VOICEGW_PUBLIC_URL",
        "",
        "Public base URL (https://gw.example.com) for Twilio signatures and stream URLs, else the request's",
    ),
    (
        "VOICEGW_SECRET_KEY",
        "",
        "Base64 of 32 bytes: AES-GCM key for stored provider keys (dev key generated in var/ when unset)",
    ),
    (
        "VOICEGW_STREAM_TOKEN_SECRET",
        "",
        "HMAC secret for media-stream tokens (default: derived from VOICEGW_SECRET_KEY, same on every node)",
    ),
    (
        "VOICEGW_TWILIO_AUTH_TOKEN",
        "",
        "Twilio auth token verifying X-Twilio-Signature; webhooks are refused (403) when unset",
    ),
    (
        "VOICEGW_TELNYX_PUBLIC_KEY",
        "",
        "Telnyx Ed25519 public key (base64) verifying webhooks; refused (403) when unset",
    ),
    ("VOICEGW_TELNYX_API_KEY", "", "Telnyx API key used to hang up calls from our side"),
    ("VOICEGW_TELNYX_API_BASE", "https://api.telnyx.com", "Telnyx REST base URL (tests point it at a fake)"),
    ("VOICEGW_STREAM_TOKEN_TTL", "60", "Seconds a stream token stays valid after the webhook answered"),
    ("VOICEGW_START_TIMEOUT", "10", "Seconds a media socket may stay open without a valid `start`"),
    ("VOICEGW_IDLE_TIMEOUT", "20", "Seconds without any carrier message before a live call is ended"),
    ("VOICEGW_MAX_CALL_SECONDS", "3600", "Hard cap on one call's duration"),
    (
        "VOICEGW_MAX_FRAME_BYTES",
        "65536",
        "Largest WebSocket message accepted from a carrier (close 1009 above)",
    ),
    (
        "VOICEGW_MAX_MESSAGES_PER_SECOND",
        "400",
        "Carrier messages per second above which a socket is closed (4429)",
    ),
    (
        "VOICEGW_PROVIDER_CONNECT_DEADLINE",
        "6",
        "Seconds to get a provider connected, over all failover attempts",
    ),
    ("VOICEGW_PROVIDER_ATTEMPT_TIMEOUT", "3", "Seconds one provider candidate may take to connect"),
    (
        "VOICEGW_PROVIDER_SILENCE_FAILOVER",
        "5",
        "Seconds the provider stays silent after the caller stopped speaking before failing over",
    ),
    ("VOICEGW_PRECONNECT", "1", "Open the provider connection while answering the webhook (1/0)"),
    ("VOICEGW_PRECONNECT_TTL", "15", "Seconds an unused pre-connection is kept"),
    (
        "VOICEGW_GC_FREEZE",
        "1",
        "Keep live calls' objects out of full garbage collections, which stop every call (1/0)",
    ),
    ("VOICEGW_DRAIN_SECONDS", "30", "On SIGTERM: how long live calls may continue before they are ended"),
    (
        "VOICEGW_NODE_ID",
        "",
        "Name of this gateway machine, kept in calls.metadata for crash recovery (default: hostname)",
    ),
    ("VOICEGW_REGION", "default", "Region name used on the provider health board"),
    (
        "VOICEGW_HEALTH_SYNC_SECONDS",
        "2",
        "How often the health board is persisted to / merged from the database",
    ),
    (
        "VOICEGW_BREAKER_COOLDOWN",
        "30",
        "Seconds an open provider circuit breaker waits before one trial call",
    ),
    ("VOICEGW_PROBE_SECONDS", "0", "Active provider probe interval (0 = off)"),
    ("VOICEGW_WRITER_FLUSH_MS", "5", "Writer flush interval"),
    ("VOICEGW_WRITER_BATCH", "2000", "Writer rows per transaction at most"),
    (
        "VOICEGW_RECORDER_BACKLOG",
        "50000",
        "Call rows held in memory while the database lags; beyond it they spill to `var/spill/`",
    ),
    ("VOICEGW_LOG_LEVEL", "INFO", "Python log level"),
)


def _env(env: Mapping[str, str], name: str) -> str:
    default = next(d for n, d, _ in ENV_VARS if n == name)
    return env.get(name, default) or default


@dataclass(slots=True)
class Settings:
    db_url: str = "var/voicegw.db"
    host: str = "127.0.0.1"
    port: int = 8080
    internal_port: int | None = None
    public_url: str | None = None
    stream_token_secret: bytes | None = None  # None: derived from the secret key at start-up
    twilio_auth_token: str | None = None
    telnyx_public_key: str | None = None
    telnyx_api_key: str | None = None
    telnyx_api_base: str = "https://api.telnyx.com"
    stream_token_ttl_s: int = 60
    start_timeout_s: float = 10.0
    idle_timeout_s: float = 20.0
    max_call_s: float = 3600.0
    max_frame_bytes: int = 65536
    max_messages_per_s: int = 400
    provider_connect_deadline_s: float = 6.0
    provider_attempt_timeout_s: float = 3.0
    provider_silence_failover_s: float = 5.0
    preconnect: bool = True
    preconnect_ttl_s: float = 15.0
    gc_freeze: bool = True
    drain_s: float = 30.0
    region: str = "default"
    node_id: str = field(default_factory=socket.gethostname)
    health_sync_s: float = 2.0
    breaker_cooldown_s: float = 30.0
    probe_s: float = 0.0
    writer_flush_ms: float = 5.0
    writer_batch: int = 2000
    recorder_backlog: int = 50_000
    log_level: str = "INFO"
    var_dir: Path = Path("var")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        internal = _env(env, "VOICEGW_INTERNAL_PORT")
        token_secret = _env(env, "VOICEGW_STREAM_TOKEN_SECRET")
        s = cls(
            db_url=_env(env, "VOICEGW_DB"),
            host=_env(env, "VOICEGW_HOST"),
            port=int(_env(env, "VOICEGW_PORT")),
            internal_port=int(internal) if internal else None,
            public_url=_env(env, "VOICEGW_PUBLIC_URL").rstrip("/") or None,
            twilio_auth_token=_env(env, "VOICEGW_TWILIO_AUTH_TOKEN") or None,
            telnyx_public_key=_env(env, "VOICEGW_TELNYX_PUBLIC_KEY") or None,
            telnyx_api_key=_env(env, "VOICEGW_TELNYX_API_KEY") or None,
            telnyx_api_base=_env(env, "VOICEGW_TELNYX_API_BASE").rstrip("/"),
            stream_token_ttl_s=int(_env(env, "VOICEGW_STREAM_TOKEN_TTL")),
            start_timeout_s=float(_env(env, "VOICEGW_START_TIMEOUT")),
            idle_timeout_s=float(_env(env, "VOICEGW_IDLE_TIMEOUT")),
            max_call_s=float(_env(env, "VOICEGW_MAX_CALL_SECONDS")),
            max_frame_bytes=int(_env(env, "VOICEGW_MAX_FRAME_BYTES")),
            max_messages_per_s=int(_env(env, "VOICEGW_MAX_MESSAGES_PER_SECOND")),
            provider_connect_deadline_s=float(_env(env, "VOICEGW_PROVIDER_CONNECT_DEADLINE")),
            provider_attempt_timeout_s=float(_env(env, "VOICEGW_PROVIDER_ATTEMPT_TIMEOUT")),
            provider_silence_failover_s=float(_env(env, "VOICEGW_PROVIDER_SILENCE_FAILOVER")),
            preconnect=_env(env, "VOICEGW_PRECONNECT") not in ("0", "false", "no"),
            preconnect_ttl_s=float(_env(env, "VOICEGW_PRECONNECT_TTL")),
            gc_freeze=_env(env, "VOICEGW_GC_FREEZE") not in ("0", "false", "no"),
            drain_s=float(_env(env, "VOICEGW_DRAIN_SECONDS")),
            region=_env(env, "VOICEGW_REGION"),
            node_id=_env(env, "VOICEGW_NODE_ID") or socket.gethostname(),
            health_sync_s=float(_env(env, "VOICEGW_HEALTH_SYNC_SECONDS")),
            breaker_cooldown_s=float(_env(env, "VOICEGW_BREAKER_COOLDOWN")),
            probe_s=float(_env(env, "VOICEGW_PROBE_SECONDS")),
            writer_flush_ms=float(_env(env, "VOICEGW_WRITER_FLUSH_MS")),
            writer_batch=int(_env(env, "VOICEGW_WRITER_BATCH")),
            recorder_backlog=int(_env(env, "VOICEGW_RECORDER_BACKLOG")),
            log_level=_env(env, "VOICEGW_LOG_LEVEL"),
        )
        if token_secret:
            s.stream_token_secret = token_secret.encode()
        for key, value in overrides.items():
            if value is not None:
                setattr(s, key, value)
        if s.stream_token_secret is not None and len(s.stream_token_secret) < 16:
            raise ValueError("VOICEGW_STREAM_TOKEN_SECRET must be at least 16 bytes")
        return s
