"""Fixtures for the adapter tests: one HTTP client session and the simulator of the case under test.

A provider module names its adapter in a module-level ``CASE``; a test parametrized with
``harness.by_case`` gets one simulator per case instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.providers.harness import ProviderCase, Simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def case(request: pytest.FixtureRequest) -> ProviderCase:
    case: ProviderCase = request.module.CASE
    return case


@pytest.fixture
async def sim(case: ProviderCase) -> AsyncIterator[Simulator]:
    simulator = case.simulator()
    await simulator.start()
    yield simulator
    await simulator.stop()
