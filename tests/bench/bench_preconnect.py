"""Time from the carrier's webhook to the first agent audio, with and without provider pre-connect.

Run: .venv/bin/python tests/bench/bench_preconnect.py [--calls 10] [--provider-delay S] [--carrier-delay S]
The provider simulator takes ``--provider-delay`` to accept a connection (real providers: 100-800 ms);
the fake carrier waits ``--carrier-delay`` between TwiML and opening the media socket, as Twilio does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loadtest.carriers.telnyx_api import TelnyxApi
from providers.simulators.elevenlabs import ElevenLabsSimulator
from storage.provision import provision
from tests.e2e.conftest import make_settings, start_gateway, stop_gateway
from tests.e2e.preconnect_rig import first_audio_after
from tests.e2e.test_preconnect import NUMBER, tenant


async def main(calls: int, provider_delay: float, carrier_delay: float) -> None:
    sim = ElevenLabsSimulator()
    sim.faults.handshake_delay_s = provider_delay
    await sim.start()
    api = TelnyxApi()
    await api.start()
    settings, creds = make_settings(Path(tempfile.mkdtemp()), api.base_url)
    gw, runner = await start_gateway(settings, creds, api)
    await provision(gw.ctx.db, tenant(sim.http_url), gw.ctx.box, now=int(time.time()))
    results: dict[str, list[float]] = {}
    for mode in (True, False, True, False):
        gw.ctx.settings.preconnect = mode
        for _ in range(calls // 2):
            elapsed, _ = await first_audio_after(gw, NUMBER, carrier_delay)
            results.setdefault("on" if mode else "off", []).append(elapsed * 1000)
    await stop_gateway(gw, runner)
    await api.stop()
    await sim.stop()
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    print(
        f"provider accept {provider_delay * 1000:.0f} ms, carrier TwiML→WSS {carrier_delay * 1000:.0f} ms, "
        f"{calls} calls each"
    )
    print(
        f"webhook → first agent audio: pre-connect {on:.0f} ms, without {off:.0f} ms, saved {off - on:.0f} ms"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--provider-delay", type=float, default=0.3)
    p.add_argument("--carrier-delay", type=float, default=0.4)
    a = p.parse_args()
    asyncio.run(main(a.calls, a.provider_delay, a.carrier_delay))
