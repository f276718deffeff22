"""Materializing several row views: their rows are read on a thread, a view ahead, under every
view's lock taken first. What fails says so, writes nothing more and leaves nothing running."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from repo_kit import PROFILE_DEFS, write_repo

from featurestore import FeatureStore
from featurestore.errors import NotAppliedError, OnlineStoreError
from featurestore.online.keys import lock_key

TWO_VIEWS = PROFILE_DEFS + """
user_limits = FeatureView("user_limits", entity=user, source=profiles, fields=[
    Field("credit_limit", Float64), Field("country", String)])
"""
END = datetime(2024, 2, 1, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> FeatureStore:
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", redis_url)
    project = f"rows{tmp_path.name[-12:].replace('-', '_')}"
    store = FeatureStore(write_repo(tmp_path, TWO_VIEWS, project=project))
    store.apply()
    return store


def no_reader_left() -> bool:
    return not any(t.name == "featurestore-rows" for t in threading.enumerate())


def test_every_view_is_materialized_and_recorded(store: FeatureStore) -> None:
    done = store.materialize(end=END)
    assert sorted((m.view, m.rows) for m in done) == [("user_limits", 2), ("user_profile", 2)]
    with store.online() as online:
        served = online.served()
    assert set(served) == {"user_profile", "user_limits"}
    for m in done:
        assert store.offline.last_materialized_end(store.plan, m.view) == m.end_us
    again = store.materialize(end=END, incremental=True)  # updates: nothing newer
    assert [(m.view, m.start_us, m.rows) for m in again] == [
        (m.view, m.end_us, 0) for m in done]
    assert no_reader_left()


def test_unapplied_definitions_are_refused_before_anything_flips(store: FeatureStore,
                                                                 redis_url: str) -> None:
    store.materialize(end=END)
    with store.online() as online:
        before = {v: s.storage for v, s in online.served().items()}
    root = store.config.root
    (root / "features.py").write_text(TWO_VIEWS.replace("days=10", "days=12"))
    store.reload()
    with pytest.raises(NotAppliedError, match="differ from the registry"):
        store.materialize(end=END)
    with store.online() as online:
        assert {v: s.storage for v, s in online.served().items()} == before
    client = redis.Redis.from_url(redis_url)
    assert client.exists(lock_key(store.plan.project, "user_profile"),
                         lock_key(store.plan.project, "user_limits")) == 0
    client.close()
    assert no_reader_left()


def test_a_view_locked_by_another_run_stops_all_before_writing(store: FeatureStore,
                                                               redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(lock_key(store.plan.project, "user_limits"), "another run")
    with pytest.raises(OnlineStoreError, match="'user_limits' is running"):
        store.materialize(end=END)
    with store.online() as online:
        assert online.served() == {}
    assert client.exists(lock_key(store.plan.project, "user_profile")) == 0
    assert client.keys(f"{store.plan.project}:user_profile:*") == []
    client.close()
    assert store.offline.last_materialized_end(store.plan, "user_profile") is None
    assert no_reader_left()
