from __future__ import annotations

from collections.abc import Iterator

import pytest

from terminals.emulator.harness import EmulatorProcess

from .pos import Channel1Responder

POOL_SIZE = 100
CARD_WAIT = 1.5


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorProcess]:
    """One emulator process for the session; each test takes a terminal nobody else used."""
    with EmulatorProcess(
        count=POOL_SIZE,
        card_wait=CARD_WAIT,
        extra_args=["--delivery-timeout", "1", "--device-timeout", "1", "--seed", "7"],
    ) as process:
        yield process


@pytest.fixture(scope="session")
def _terminal_pool(emulator: EmulatorProcess) -> Iterator[list[dict]]:
    yield list(emulator.terminals)


@pytest.fixture
def terminal(_terminal_pool: list[dict]) -> dict:
    if not _terminal_pool:
        pytest.fail(f"terminal pool exhausted: raise POOL_SIZE ({POOL_SIZE})")
    return _terminal_pool.pop(0)


@pytest.fixture
def tid(terminal: dict) -> str:
    return terminal["terminal_id"]


@pytest.fixture
def channel1(terminal: dict) -> Iterator[Channel1Responder]:
    """A POS channel-1 peer connected to the test's terminal that confirms and acknowledges."""
    responder = Channel1Responder().connect(terminal)
    yield responder
    responder.close()
