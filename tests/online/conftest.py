"""The online store of a test's plan, against the session's real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from featurestore.online.store import OnlineStore
from featurestore.plan import Plan


@pytest.fixture
def store_for(online_url: str) -> Iterator[Callable[[Plan], OnlineStore]]:
    """Opens the online store of a plan's project; every store opened is closed after the
    test."""
    opened: list[OnlineStore] = []

    def open_for(plan: Plan) -> OnlineStore:
        opened.append(OnlineStore(online_url, plan.project))
        return opened[-1]
    yield open_for
    for store in opened:
        store.close()
