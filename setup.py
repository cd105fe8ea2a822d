"""Build hook: the per-frame modules are compiled to C extensions with mypyc.

Everything else about the package is in pyproject.toml; this file exists only because setuptools
takes extension modules from ``setup()``. The compiled modules are the ones every 20 ms frame of
every call runs through (WebSocket framing, the carrier codecs, the echo provider) and the load
generator's own per-frame path; compiling them cut the gateway's CPU per call by about a quarter
(docs/architecture.md, "Performance, as measured"). The same sources run unchanged as plain Python:
``VOICEGW_PURE_PYTHON=1 pip install -e .`` builds nothing, and a module whose build is skipped or
missing is simply imported from its ``.py``.

After editing a compiled module, reinstall (``make venv`` notices) or the stale extension keeps
being imported; ``gateway.compiled.stale_extensions`` catches that (the test suite and
``voicegw serve`` check it at start).
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

COMPILED_MODULES = [
    "providers/ws_frames.py",
    "gateway/media_socket.py",
    "gateway/carriers/base.py",
    "gateway/carriers/twilio.py",
    "gateway/carriers/telnyx.py",
    "providers/echo.py",
    "providers/base.py",
    "gateway/media.py",
    "gateway/session.py",
    "gateway/frame_counters.py",
    "providers/ws_client.py",
    # a relayed call's agent frames: the session shell, its event queue and the benched provider
    "providers/event_feed.py",
    "providers/ws_session.py",
    "providers/deepgram/protocol.py",
    "providers/deepgram/client.py",
    # JSON + base64 audio on every frame: the two adapters most calls are expected to use
    "providers/elevenlabs/protocol.py",
    "providers/elevenlabs/client.py",
    "providers/openai/protocol.py",
    "providers/openai/client.py",
    "gateway/audio.py",  # transcoding: numpy per frame, but the glue between its calls is Python
    # the load generator's per-frame path: its CPU, not the gateway's, capped the bench's steps
    "loadtest/carriers/ws.py",
    "loadtest/carriers/wire.py",
    "loadtest/carriers/call.py",
    "loadtest/pacer.py",
    "loadtest/playout.py",
    "loadtest/carriers/plan.py",  # CallResult: counters bumped on every frame
    "loadtest/tonedetect.py",
    "loadtest/timehist.py",  # every frame's lateness is recorded here
]


# Hand-written C, built always (VOICEGW_PURE_PYTHON skips only mypyc): the transcoder's FIR.
# -fno-math-errno lets lrintf compile to one instruction; the file picks its own SIMD clones.
NATIVE_EXTENSIONS = [
    Extension(
        "gateway._polyphase",
        ["gateway/_polyphase.c"],
        extra_compile_args=[] if os.name == "nt" else ["-O3", "-fno-math-errno"],
    ),
]


def _extensions() -> list[object]:
    if os.environ.get("VOICEGW_PURE_PYTHON", "") not in ("", "0"):
        return list(NATIVE_EXTENSIONS)
    from mypyc.build import mypycify

    # pip builds in an isolated environment without the runtime dependencies: their types are
    # then unknown (Any, by ignore_missing_imports), so a "type: ignore" about them is not an
    # error. The own cache keeps a developer's .mypy_cache (which knows them) out of the build,
    # so every build compiles the same code.
    options = ["--no-warn-unused-ignores", "--cache-dir", "build/mypyc-cache"]
    compiled = mypycify([*options, *COMPILED_MODULES], opt_level="3", group_name="voicegw_native")
    return [*NATIVE_EXTENSIONS, *compiled]


setup(ext_modules=_extensions())
