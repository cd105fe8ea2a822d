"""Which of voicegw's modules run as compiled extensions, and which extensions are stale.

``setup.py`` compiles the per-frame modules in place (next to their ``.py``) on an editable
install, with mypyc; hand-written C modules (``gateway/_polyphase.c``) are built next to their
``.c`` the same way. Python then imports the extension, not the source: after an edit, the old code keeps
running until the next install. A stale extension is one older than its source; the test suite
refuses to run with one, ``voicegw serve`` warns, and ``make`` rebuilds
(``python -m gateway.compiled`` exits 1 when one is stale).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("gateway", "routing", "providers", "storage", "loadtest")


def _package_dirs() -> list[Path]:
    dirs: list[Path] = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def extensions(roots: Iterable[Path] | None = None) -> dict[Path, Path]:
    """Each compiled module's extension file → its source file (where the source exists), under
    ``roots`` (default: voicegw's package directories)."""
    found: dict[Path, Path] = {}
    for root in _package_dirs() if roots is None else roots:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            for ext in root.rglob("*" + suffix):
                stem = ext.name[: -len(suffix)]
                for source in (ext.with_name(stem + ".py"), ext.with_name(stem + ".c")):
                    if source.exists():
                        found[ext] = source
                        break
    return found


def stale_extensions(roots: Iterable[Path] | None = None) -> list[Path]:
    """Sources edited after their extension was built (the extension is what gets imported)."""
    found = extensions(roots)
    return sorted(src for ext, src in found.items() if src.stat().st_mtime > ext.stat().st_mtime)


def compiled_module_names() -> list[str]:
    """Dotted names of the modules that have an extension (imported or not)."""
    names = []
    for _, src in extensions().items():
        for root in _package_dirs():
            if src.is_relative_to(root.parent):
                names.append(".".join(src.relative_to(root.parent).with_suffix("").parts))
                break
    return sorted(names)


def main() -> int:
    stale = stale_extensions()
    for src in stale:
        print(f"stale compiled module: {src} changed after its extension was built", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
