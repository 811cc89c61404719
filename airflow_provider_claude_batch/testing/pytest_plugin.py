"""pytest fixtures for the Anthropic API emulator (registered as the ``claude_batch_emulator`` plugin).

One server per test session keeps the suite fast; ``claude_emulator`` resets it before each test
so tests never see each other's batches, counters or config. Nothing is set globally: tests pass
``base_url=claude_emulator.url`` and an API key to the SDK themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .emulator import EmulatorConfig, EmulatorServer

__all__ = ["TEST_CONFIG", "claude_emulator", "claude_emulator_factory", "claude_emulator_session"]

TEST_CONFIG: dict[str, Any] = {"processing_seconds": 0.2}
"""Defaults for tests: batches end after 0.2 s instead of 2 s."""


@pytest.fixture(scope="session")
def claude_emulator_session() -> Iterator[EmulatorServer]:
    """The session-wide emulator; prefer ``claude_emulator``, which also resets it."""
    with EmulatorServer(EmulatorConfig(**TEST_CONFIG)) as server:
        yield server


@pytest.fixture
def claude_emulator(claude_emulator_session: EmulatorServer) -> EmulatorServer:
    """A clean emulator: no batches, zeroed counters, default config with ``processing_seconds=0.2``."""
    claude_emulator_session.reset(EmulatorConfig(**TEST_CONFIG))
    return claude_emulator_session


@pytest.fixture
def claude_emulator_factory() -> Iterator[Callable[..., EmulatorServer]]:
    """Start extra emulators with their own config: ``claude_emulator_factory(api_key="k")``.

    Every server started through the factory is stopped when the test ends.
    """
    servers: list[EmulatorServer] = []

    def make(**config: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(**{**TEST_CONFIG, **config})).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
