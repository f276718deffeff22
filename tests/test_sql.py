"""The analysts' SQL surface agrees with training sets and cannot modify the store."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from repo_kit import T0, write_repo

from featurestore import FeatureStore
from featurestore.errors import ReadOnlyError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    s = FeatureStore(write_repo(tmp_path_factory.mktemp("sql")))
    s.apply()
    return s


def labels() -> pl.DataFrame:
    times = [T0 + timedelta(days=d, hours=h) for d in range(-1, 14) for h in (0, 12)]
    return pl.DataFrame({
        "user_id": [1 + i % 3 for i in range(len(times))],
        "event_timestamp": times,
        "amount": [float(i) - 3.5 if i % 5 else None for i in range(len(times))],
    })


@pytest.mark.parametrize("statement", [
    "DELETE FROM _fs.registry",
    "CREATE TABLE x AS SELECT 1",
    "INSERT INTO _fs.meta VALUES ('a', 'b')",
    "DROP VIEW features.user_profile",
])
def test_writes_are_refused(store: FeatureStore, statement: str) -> None:
    with pytest.raises(ReadOnlyError, match="read-only"):
        store.sql(statement)


def values(frame: pl.DataFrame) -> str:
    """The labels as a SQL VALUES list (analysts' SQL cannot read files)."""
    rows = [f"({i}, {r['user_id']}, TIMESTAMPTZ '{r['event_timestamp']}', "
            f"{'NULL' if r['amount'] is None else repr(r['amount'])}::DOUBLE)"
            for i, r in enumerate(frame.to_dicts())]
    return f"(VALUES {', '.join(rows)}) AS t(i, user_id, event_timestamp, amount)"


def test_asof_macro_and_transform_functions_match_the_training_set(store: FeatureStore) -> None:
    frame = labels()
    expected = store.training_set(frame, service="fraud_v1")
    got = store.sql(f"""
        CREATE TEMP VIEW labels AS SELECT * FROM {values(frame)};
        SELECT i, age, country, credit_limit, is_premium,
               amount_to_limit(amount, credit_limit) AS amount_to_limit
        FROM features.user_profile_asof('labels') ORDER BY i""")
    columns = ["age", "country", "credit_limit", "is_premium", "amount_to_limit"]
    assert got.select(columns).equals(expected.select(columns))
    # The fixture's data has a ttl edge and missing entities, so nulls must be present.
    assert expected["age"].null_count() > 0
    assert expected["amount_to_limit"].null_count() > expected["age"].null_count()


def test_feature_and_source_views_are_plain_sql(store: FeatureStore) -> None:
    views = store.sql("SELECT user_id, age, event_timestamp, visible_at FROM features.user_profile "
                      "ORDER BY user_id, event_timestamp")
    assert views["age"].to_list() == [30, 31, 40]
    assert store.sql("SELECT count(*) AS n FROM sources.profiles")["n"][0] == 3
