"""Suite-wide guard: no test runs against a compiled module that is older than its source."""

from __future__ import annotations

import pytest

from gateway.compiled import stale_extensions


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_extensions()
    if stale:
        pytest.exit(
            "compiled modules are older than their source (the old build would be tested): "
            + ", ".join(str(p) for p in stale)
            + ". `make test` rebuilds them; or run `.venv/bin/pip install -e .`",
            returncode=4,
        )
