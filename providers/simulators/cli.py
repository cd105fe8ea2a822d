"""``voicegw simulate PROVIDER --port P``: run one provider simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys

from gateway import event_loop
from providers.simulators.base import SimulatorServer

SIMULATORS: dict[str, str] = {
    "elevenlabs": "providers.simulators.elevenlabs:ElevenLabsSimulator",
    "deepgram": "providers.simulators.deepgram:DeepgramSimulator",
    "openai": "providers.simulators.openai:OpenAISimulator",
    "retell": "providers.simulators.retell:RetellSimulator",
    "vapi": "providers.simulators.vapi:VapiSimulator",
    "bolna": "providers.simulators.bolna:BolnaSimulator",
}


# Simulators whose sessions honour ``Script.relay`` (frame-by-frame echo for ``voicegw bench``).
RELAY_CAPABLE = frozenset({"deepgram"})


def simulator_class(name: str) -> type:
    module_name, attr = SIMULATORS[name].split(":")
    cls: type = getattr(importlib.import_module(module_name), attr)
    return cls


async def start_simulator(
    name: str, host: str, port: int, *, relay: bool = False, access_log: bool = True
) -> SimulatorServer:
    """The simulator ``name``, listening (``port`` 0: any free port, then read ``.port``).

    ``relay``: every caller frame straight back, and its event loop's lag watched (``GET /_sim/lag``):
    on the generator's core in ``voicegw bench``, which judges whether it kept up."""
    sim = simulator_class(name)()  # the scripted simulators: each has a Script
    if relay:
        sim.script.relay = True
    await sim.start(host, port, access_log=access_log)
    if relay:
        sim.watch_loop_lag()
    return sim


async def _run(name: str, host: str, port: int, relay: bool = False) -> None:
    sim = await start_simulator(name, host, port, relay=relay)
    print(f"{name} simulator listening on {host}:{sim.port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def _cmd(args: argparse.Namespace) -> int:
    if args.relay and args.provider not in RELAY_CAPABLE:
        print(f"error: --relay is implemented for: {', '.join(sorted(RELAY_CAPABLE))}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        event_loop.run(_run(args.provider, args.host, args.port, args.relay))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a provider simulator")
    p.add_argument("provider", choices=sorted(SIMULATORS))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument(
        "--relay", action="store_true", help="send every caller frame straight back (latency benchmarks)"
    )
    p.set_defaults(func=_cmd)
