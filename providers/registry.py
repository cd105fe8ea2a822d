"""Provider name → adapter ``connect`` function, imported lazily so one broken adapter
cannot stop the gateway from serving calls on the others."""

from __future__ import annotations

import importlib

from providers.base import Connector, ErrorKind, ProviderError

ADAPTERS: dict[str, str] = {
    "echo": "providers.echo:connect",
    "elevenlabs": "providers.elevenlabs.client:connect",
    "deepgram": "providers.deepgram.client:connect",
    "openai": "providers.openai.client:connect",
    "retell": "providers.retell.client:connect",
    "vapi": "providers.vapi.client:connect",
    "bolna": "providers.bolna.client:connect",
}

KNOWN_PROVIDERS = frozenset(ADAPTERS)
_cache: dict[str, Connector] = {}


def connector(name: str) -> Connector:
    """The ``connect`` function for ``name``; ``ProviderError(CONFIG)`` when unknown."""
    fn = _cache.get(name)
    if fn is not None:
        return fn
    target = ADAPTERS.get(name)
    if target is None:
        raise ProviderError(ErrorKind.CONFIG, f"unknown provider {name!r}")
    module_name, attr = target.split(":")
    fn = getattr(importlib.import_module(module_name), attr)
    _cache[name] = fn
    return fn
