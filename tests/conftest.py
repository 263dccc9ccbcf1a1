"""Shared fixtures: a running Cloudflare Access key simulator that speaks real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from cloudflare_sim import Simulator, SimulatorThread

TEST_TOKEN = "test-token"


# Each folder of tests is a marker of the same name: `pytest -m "unit or component"` is `make check`'s.
KINDS = ("unit", "component", "e2e", "deploy")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's kind; the container image's tests last (`make test` builds the
    image in the background meanwhile)."""
    for item in items:
        kind = item.path.parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
    items.sort(key=lambda item: item.path.name == "test_image.py")  # stable: the rest keep their order


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., SimulatorThread]]:
    """Factory: ``make_simulator(n=3, **with_accounts_kwargs)`` starts a simulator thread.

    Defaults: 3 accounts, token "test-token" with write permission, real-time days. Every
    simulator started is stopped at teardown.
    """
    with ExitStack() as stack:

        def make(n: int = 3, **kwargs: Any) -> SimulatorThread:
            kwargs.setdefault("token", TEST_TOKEN)
            sim = Simulator.with_accounts(n, **kwargs)
            return stack.enter_context(SimulatorThread(sim))

        yield make


@pytest.fixture
def simulator(make_simulator: Callable[..., SimulatorThread]) -> SimulatorThread:
    """A running simulator: 3 accounts, token "test-token" (write), one simulated day per day."""
    return make_simulator()
