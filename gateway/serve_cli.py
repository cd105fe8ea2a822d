"""``voicegw serve``: run the gateway (one process, or N workers sharing the port).

With ``--workers N`` the parent prepares the database once (migrate, provision, recover), then
forks N workers that each bind the same port with SO_REUSEPORT; the kernel spreads connections
across them. SIGTERM/SIGINT drain: new calls are refused, live calls get ``VOICEGW_DRAIN_SECONDS``
to finish, the rest are ended cleanly, the writer is flushed, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import logging
import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from setproctitle import setproctitle, setthreadtitle

from gateway import event_loop
from gateway.config import Settings

log = logging.getLogger("voicegw")


def _dev_credentials(var_dir: Path) -> None:
    """``--demo`` without carrier credentials: make local ones so the demo can be called at once.

    Writes ``var/dev.env`` (shell exports for ``voicegw loadtest``) and puts the gateway's half
    in this process's environment. Never used when the variables are already set.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    path = var_dir / "dev.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                k, _, v = line[len("export ") :].partition("=")
                values[k] = v
    if "VOICEGW_TWILIO_AUTH_TOKEN" not in values:
        values["VOICEGW_TWILIO_AUTH_TOKEN"] = secrets.token_hex(16)
    if "VOICEGW_TELNYX_PRIVATE_KEY" not in values:
        seed = secrets.token_bytes(32)
        public = (
            Ed25519PrivateKey.from_private_bytes(seed)
            .public_key()
            .public_bytes(Encoding.Raw, PublicFormat.Raw)
        )
        values["VOICEGW_TELNYX_PRIVATE_KEY"] = base64.b64encode(seed).decode()
        values["VOICEGW_TELNYX_PUBLIC_KEY"] = base64.b64encode(public).decode()
    var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others
    with os.fdopen(fd, "w") as out:
        out.write("".join(f"export {k}={v}\n" for k, v in sorted(values.items())))
    for key in ("VOICEGW_TWILIO_AUTH_TOKEN", "VOICEGW_TELNYX_PUBLIC_KEY"):
        if not os.environ.get(key):
            os.environ[key] = values[key]
            log.warning("%s not set: using a generated development value from %s", key, path)


def _redacted(url: str) -> str:
    """A database URL fit for a log line: no password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def _prepare(settings: Settings, demo: bool) -> None:
    """One-time database preparation before any worker starts."""
    from gateway.app import close_context, open_context

    ctx = await open_context(settings, demo=demo)
    await close_context(ctx)


async def _serve(settings: Settings, demo: bool, reuse_port: bool, recover_calls: bool = True) -> None:
    from gateway.app import close_context, create_app, drain, internal_app, open_context

    # asyncio.to_thread work (the recorder's start-up replay, in open_context) runs here: named, like
    # every thread of ours, so `top -H` and /proc/<pid>/task/*/comm say whose they are (uvloop's name
    # lookups run on libuv's own, already named "libuv-worker").
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(thread_name_prefix="voicegw-io", initializer=setthreadtitle, initargs=("vgw-io",))
    )
    ctx = await open_context(settings, demo=demo, recover_calls=recover_calls)
    app = create_app(ctx, include_internal=settings.internal_port is None)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port or None).start()
    internal_runner = None
    if settings.internal_port is not None:
        internal_runner = web.AppRunner(internal_app(ctx), handle_signals=False, access_log=None)
        await internal_runner.setup()
        await web.TCPSite(
            internal_runner, settings.host, settings.internal_port, reuse_port=reuse_port or None
        ).start()
    log.info(
        "voicegw pid %d listening on http://%s:%d (db %s)",
        os.getpid(),
        settings.host,
        settings.port,
        _redacted(settings.db_url),
    )
    _freeze_startup_objects()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: draining")
    await drain(ctx, settings.drain_s)
    await runner.cleanup()
    if internal_runner is not None:
        await internal_runner.cleanup()
    await close_context(ctx)
    log.info("voicegw pid %d stopped cleanly", os.getpid())


def _freeze_startup_objects() -> None:
    """Keeps the objects made at start-up (modules, aiohttp, numpy, caches) out of every later
    garbage collection. A full collection over them takes ~30-40 ms (measured during start-up), a
    stall of every live call's audio if one came under load; live calls' objects are kept out the
    same way as they come (``gateway/gc_freeze.py``)."""
    gc.collect()
    gc.freeze()


def _log_compiled_modules() -> None:
    """Says whether the per-frame modules run compiled (setup.py), and warns when one is stale."""
    from gateway._polyphase import KERNELS
    from gateway.compiled import compiled_module_names, stale_extensions

    names = compiled_module_names()
    log.info("compiled modules: %s", ", ".join(names) if names else "none (pure Python)")
    log.info("resampler kernel: %s (this CPU can run: %s)", KERNELS[0], ", ".join(KERNELS))
    for source in stale_extensions():
        log.warning("%s changed after it was compiled: the old build runs until reinstalled", source)


def _name_process(title: str, loop_thread: str) -> None:
    """``ps`` shows ``title`` (port, worker n of N); ``top -H``, ``pgrep voicegw`` and schedstat
    tools show the main thread, which runs the event loop, as ``loop_thread`` (at most 15 bytes)."""
    setproctitle(title)
    setthreadtitle(loop_thread)


def _cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(host=args.host, port=args.port, db_url=args.db)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    if args.demo:
        _dev_credentials(settings.var_dir)
        settings = Settings.from_env(host=args.host, port=args.port, db_url=args.db)
    _log_compiled_modules()
    workers = max(1, args.workers)
    if workers > 1 and settings.preconnect:
        # The kernel spreads the webhook and the media socket over workers independently: a
        # pre-connection would sit on the wrong worker (N-1)/N of the time, billed and unused.
        log.info("pre-connect is off with --workers > 1")
        settings.preconnect = False
    title = f"voicegw serve :{settings.port}"
    if workers == 1:
        _name_process(title, "voicegw")
        event_loop.run(_serve(settings, args.demo, reuse_port=False))
        return 0
    _name_process(f"{title} parent of {workers} workers", "voicegw-parent")
    event_loop.run(_prepare(settings, args.demo))
    children: list[int] = []
    for n in range(1, workers + 1):
        pid = os.fork()
        if pid == 0:  # worker
            _name_process(f"{title} worker {n}/{workers}", f"voicegw-w{n}")
            code = 0
            try:
                # recover_calls=False: the parent already closed the calls a crash left open
                event_loop.run(_serve(settings, False, reuse_port=True, recover_calls=False))
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--host", default=None, help="listen address (VOICEGW_HOST)")
    p.add_argument("--port", type=int, default=None, help="listen port (VOICEGW_PORT)")
    p.add_argument("--db", default=None, help="database URL (VOICEGW_DB)")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--demo", action="store_true", help="provision the demo tenant and dev credentials")
    p.set_defaults(func=_cmd_serve)
