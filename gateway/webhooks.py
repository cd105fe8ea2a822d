"""Carrier voice webhooks: verify, look the number up, admit or refuse, answer TwiML/TeXML.

Both carriers share ``admit_call``; the two handlers only differ in how the request is
authenticated and which markup dialect answers it. A refused call gets a short spoken sentence
and a hang-up (never a carrier error tone), a log line, and — when the number resolved to an
agent — a ``calls`` row with status ``failed`` plus a ``call_events`` row saying why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from gateway.app import CTX_KEY, GatewayContext
from gateway.carriers.markup import (
    texml_connect_stream,
    texml_say_hangup,
    twiml_connect_stream,
    twiml_say_hangup,
)
from gateway.security import mint_stream_token, verify_telnyx_signature, verify_twilio_signature
from gateway.selection import CallSetup
from storage.billing import check_call_allowed
from storage.calls import finish_call_stmt, insert_call_stmt, insert_event_stmt
from storage.ids import new_id, now_s
from storage.tenancy import resolve_number

log = logging.getLogger(__name__)

REFUSALS: dict[str, str] = {
    "draining": "We are unable to take your call right now. Please call again in a moment.",
    "unknown_number": "The number you have dialled is not in service. Goodbye.",
    "number_inactive": "The number you have dialled is not in service. Goodbye.",
    "agent_unavailable": "This line is not taking calls right now. Please try again later. Goodbye.",
    "workspace_suspended": "This service is currently unavailable. Goodbye.",
    "workspace_cancelled": "This service is no longer available. Goodbye.",
    "trial_expired": "This service's trial period has ended. Goodbye.",
    "usage_limit_reached": "This line has reached its usage limit for this month. Goodbye.",
    "no_provider": "We are unable to connect your call right now. Please try again later. Goodbye.",
}


@dataclass(slots=True)
class Markup:
    connect: Callable[[str, dict[str, str]], str]
    refuse: Callable[[str], str]
    media_path: str


TWILIO = Markup(twiml_connect_stream, twiml_say_hangup, "/twilio/media")
TELNYX = Markup(texml_connect_stream, texml_say_hangup, "/telnyx/media")


def _xml(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="application/xml")


def _public_url(ctx: GatewayContext, request: web.Request) -> str:
    """The URL the carrier called, as it signed it (VOICEGW_PUBLIC_URL behind proxies)."""
    if ctx.settings.public_url:
        return ctx.settings.public_url + request.path_qs
    return str(request.url)


def _stream_url(ctx: GatewayContext, request: web.Request, path: str) -> str:
    if ctx.settings.public_url:
        base = ctx.settings.public_url
    else:
        base = f"{request.scheme}://{request.host}"
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + path
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + path
    return base + path


async def admit_call(
    ctx: GatewayContext,
    request: web.Request,
    markup: Markup,
    carrier: str,
    form: MultiDictProxy[Any],
) -> web.Response:
    t0 = time.perf_counter()
    to = str(form.get("To", "")).strip()
    caller = str(form.get("From", "")).strip() or "unknown"
    carrier_call_id = str(form.get("CallSid", "")) or None
    caller_name = form.get("CallerName")

    def refuse(reason: str, call_row: tuple[str, str, str, str] | None = None) -> web.Response:
        ctx.stats.refusals[reason] += 1
        log.info("%s call to %s from %s refused: %s", carrier, to, caller, reason)
        if call_row is not None:
            call_id, workspace_id, agent_id, number_id = call_row
            started = now_s()
            ctx.recorder.statement(
                insert_call_stmt(
                    call_id=call_id,
                    workspace_id=workspace_id,
                    agent_id=agent_id,
                    phone_number_id=number_id,
                    caller_number=caller,
                    caller_name=str(caller_name) if caller_name else None,
                    direction="inbound",
                    status="failed",
                    provider_call_sid=carrier_call_id,
                    voice_provider_used="none",
                    started_at=started,
                )
            )
            ctx.recorder.statement(finish_call_stmt(call_id, "failed", 0, started, "none", None, 0.0))
            ctx.recorder.event(call_id, "refused", {"reason": reason, "carrier": carrier, "to": to})
        status = 503 if reason == "draining" else 200
        return _xml(markup.refuse(REFUSALS[reason]), status)

    if ctx.draining:
        return refuse("draining")
    route = await resolve_number(ctx.db, to)
    if route is None:
        return refuse("unknown_number")
    number, agent, workspace = route.number, route.agent, route.workspace
    if number.status not in (None, "active"):
        return refuse("number_inactive")
    if agent is None:
        return refuse("agent_unavailable")
    call_id = new_id()
    row = (call_id, workspace.id, agent.id, number.id)
    now = now_s()
    if agent.status not in ("live", "testing"):
        return refuse("agent_unavailable", row)
    if workspace.status == "suspended":
        return refuse("workspace_suspended", row)
    if workspace.status == "cancelled":
        return refuse("workspace_cancelled", row)
    if workspace.status == "trial" and (workspace.trial_ends_at is None or workspace.trial_ends_at <= now):
        return refuse("trial_expired", row)
    limit = await check_call_allowed(ctx.db, workspace.id, now)
    if not limit.allowed:
        return refuse(limit.reason or "usage_limit_reached", row)

    setup = CallSetup(
        call_id=call_id,
        carrier=carrier,
        workspace_id=workspace.id,
        workspace_timezone=workspace.timezone or "UTC",
        agent_id=agent.id,
        agent_voice_provider=agent.voice_provider,
        agent_voice_config=agent.voice_config,
        agent_config=agent.config,
        caller_number=caller,
        called_number=to,
    )
    plan = await ctx.selector.plan(setup)
    if not plan.attempts:
        ctx.recorder.event(call_id, "routing", {"skipped": dict(plan.decision.skipped)})
        return refuse("no_provider", row)

    # The call row must be committed before the carrier can open the media socket.
    await ctx.writer.commit(
        insert_call_stmt(
            call_id=call_id,
            workspace_id=workspace.id,
            agent_id=agent.id,
            phone_number_id=number.id,
            caller_number=caller,
            caller_name=str(caller_name) if caller_name else None,
            direction="inbound",
            status="ringing",
            provider_call_sid=carrier_call_id,
            voice_provider_used=plan.attempts[0].provider,
            started_at=now,
            metadata={"node": ctx.settings.node_id},
        )
    )
    ctx.recorder.statement(
        insert_event_stmt(
            call_id,
            "initiated",
            {
                "carrier": carrier,
                "to": to,
                "from": caller,
                "carrier_call_id": carrier_call_id,
                "strategy": plan.decision.strategy,
                "candidates": [
                    {"provider": c.provider, "reason": c.reason} for c in plan.decision.candidates
                ],
                "skipped": dict(plan.decision.skipped),
            },
            now,
        )
    )
    ctx.selector.remember(setup)
    ctx.selector.preconnect(call_id, plan)
    token = mint_stream_token(
        ctx.token_secret, call_id, carrier, ctx.settings.stream_token_ttl_s, time.time()
    )
    body = markup.connect(_stream_url(ctx, request, markup.media_path), {"call_id": call_id, "token": token})
    ctx.stats.webhook_latency.observe(time.perf_counter() - t0)
    return _xml(body)


def _forbidden(ctx: GatewayContext, reason: str, detail: str) -> web.Response:
    """403 for a webhook we cannot trust (unsigned, forged, stale, or verification unconfigured)."""
    log.warning("webhook refused (403): %s", detail)
    ctx.stats.refusals[reason] += 1
    return web.Response(status=403, text=reason.replace("_", " "))


async def twilio_voice(request: web.Request) -> web.Response:
    ctx = request.app[CTX_KEY]
    form = await request.post()
    auth_token = ctx.settings.twilio_auth_token
    if not auth_token:
        return _forbidden(ctx, "twilio_not_configured", "VOICEGW_TWILIO_AUTH_TOKEN is not set")
    params = {key: [str(v) for v in form.getall(key)] for key in set(form.keys())}
    signature = request.headers.get("X-Twilio-Signature", "")
    if not verify_twilio_signature(auth_token, _public_url(ctx, request), params, signature):
        return _forbidden(ctx, "bad_signature", f"bad X-Twilio-Signature from {request.remote}")
    return await admit_call(ctx, request, TWILIO, "twilio", form)


async def telnyx_voice(request: web.Request) -> web.Response:
    ctx = request.app[CTX_KEY]
    body = await request.read()
    public_key = ctx.settings.telnyx_public_key
    if not public_key:
        return _forbidden(ctx, "telnyx_not_configured", "VOICEGW_TELNYX_PUBLIC_KEY is not set")
    ok = verify_telnyx_signature(
        public_key,
        request.headers.get("telnyx-timestamp", ""),
        body,
        request.headers.get("telnyx-signature-ed25519", ""),
        time.time(),
    )
    if not ok:
        return _forbidden(ctx, "bad_signature", f"bad or stale Ed25519 signature from {request.remote}")
    form = await request.post()  # aiohttp caches the body: parses what was verified
    return await admit_call(ctx, request, TELNYX, "telnyx", form)


def routes() -> list[web.RouteDef]:
    return [web.post("/twilio/voice", twilio_voice), web.post("/telnyx/voice", telnyx_voice)]
