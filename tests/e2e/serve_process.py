"""A real ``voicegw serve`` process for end-to-end tests: its own port, SQLite file and credentials."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from loadtest.bench_procs import free_port
from loadtest.carriers.plan import Credentials


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    url: str
    db: Path
    credentials: Credentials
    internal_url: str | None = None


async def spawn_serve(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> ServeProcess:
    """`voicegw serve --demo` in a process of its own, in ``tmp_path``, once it answers /health."""
    seed = os.urandom(32)
    public = (
        Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    port = free_port()
    db = tmp_path / "serve.db"
    full_env = {
        **os.environ,
        "VOICEGW_TWILIO_AUTH_TOKEN": "serve-test-token",
        "VOICEGW_TELNYX_PUBLIC_KEY": base64.b64encode(public).decode(),
        "VOICEGW_DRAIN_SECONDS": "3",
        "VOICEGW_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        **(env or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "serve",
        "--demo",
        "--port",
        str(port),
        "--db",
        str(db),
        *extra,
        cwd=tmp_path,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    internal = full_env.get("VOICEGW_INTERNAL_PORT")
    health_url = f"http://127.0.0.1:{internal}/health" if internal else url + "/health"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(health_url) as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        else:
            proc.kill()
            out = await proc.stdout.read() if proc.stdout else b""
            raise AssertionError(f"voicegw serve did not come up:\n{out.decode()[-3000:]}")
    creds = Credentials(
        twilio_auth_token="serve-test-token", telnyx_private_key=base64.b64encode(seed).decode()
    )
    return ServeProcess(proc, url, db, creds, f"http://127.0.0.1:{internal}" if internal else None)
