"""The compiled build (setup.py): stale extensions are caught, and the suite tests the compiled code."""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

import pytest

import gateway.media_socket
import providers.ws_frames
from gateway.compiled import compiled_module_names, extensions, stale_extensions

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "fresh.py").write_text("")
    (pkg / ("fresh" + SUFFIX)).write_bytes(b"")
    (pkg / "edited.py").write_text("")
    (pkg / ("edited" + SUFFIX)).write_bytes(b"")
    (pkg / "native.c").write_text("")  # hand-written C is judged by its .c
    (pkg / ("native" + SUFFIX)).write_bytes(b"")
    (pkg / ("orphan" + SUFFIX)).write_bytes(b"")  # no source: not ours to judge
    os.utime(pkg / "fresh.py", (1000, 1000))
    os.utime(pkg / "edited.py", (3000, 3000))
    os.utime(pkg / "native.c", (3000, 3000))
    for name in ("fresh", "edited", "native", "orphan"):
        os.utime(pkg / (name + SUFFIX), (2000, 2000))
    assert sorted(p.name for p in extensions([tmp_path]).values()) == ["edited.py", "fresh.py", "native.c"]
    assert stale_extensions([tmp_path]) == [pkg / "edited.py", pkg / "native.c"]


@pytest.mark.skipif(
    os.environ.get("VOICEGW_PURE_PYTHON", "") not in ("", "0"), reason="pure-Python build requested"
)
def test_the_per_frame_modules_run_compiled() -> None:
    """Unless a pure build was asked for, the suite must exercise the compiled code it ships."""
    for module in (gateway.media_socket, providers.ws_frames):
        assert module.__file__ is not None and not module.__file__.endswith(".py"), module.__file__
    assert {"gateway.media_socket", "providers.ws_frames", "gateway._polyphase"} <= set(
        compiled_module_names()
    )
