"""The README's configuration table lists exactly the variables the gateway reads."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.config import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `(VOICEGW_[A-Z_]+)` \|", readme, flags=re.M))
    assert documented == {name for name, _, _ in ENV_VARS}


def test_settings_read_from_env() -> None:
    s = Settings.from_env(
        {"VOICEGW_PORT": "9999", "VOICEGW_PRECONNECT": "0", "VOICEGW_INTERNAL_PORT": "9100"}
    )
    assert s.port == 9999 and s.preconnect is False and s.internal_port == 9100
    assert Settings.from_env({}).port == 8080
