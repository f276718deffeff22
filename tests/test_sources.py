"""Source data that does not match its definition is refused with the source, file, column and
fix named; nothing of it is stored."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from repo_kit import PROFILE_DEFS, T0, profiles_frame, write_repo

from featurestore import FeatureStore
from featurestore.errors import SourceDataError, UnknownNameError

LABELS = pl.DataFrame({"user_id": [1, 2, 3], "amount": [10.0, 10.0, 10.0],
                       "event_timestamp": [datetime(2024, 1, 5)] * 3}
                      ).with_columns(pl.col("event_timestamp").dt.replace_time_zone("UTC"))


def test_missing_file(tmp_path: Path) -> None:
    root = write_repo(tmp_path, data={})
    with pytest.raises(SourceDataError, match=r"Source 'profiles': no file matches path='data/profiles"):
        FeatureStore(root).apply()


def test_missing_column_lists_the_columns_there_are(tmp_path: Path) -> None:
    root = write_repo(tmp_path, data={"profiles": profiles_frame().drop("age")})
    with pytest.raises(SourceDataError,
                       match=r"has no column 'age', which FeatureView 'user_profile' reads; its "
                             r"columns are user_id, updated_at, country"):
        FeatureStore(root).apply()


def test_wrong_column_type(tmp_path: Path) -> None:
    frame = profiles_frame().with_columns(pl.col("age").cast(pl.String))
    root = write_repo(tmp_path, data={"profiles": frame})
    with pytest.raises(SourceDataError, match=r"column 'age' .* is VARCHAR, but FeatureView "
                                              r"'user_profile' declares Int64"):
        FeatureStore(root).apply()


def test_naive_timestamps_need_a_declared_zone(tmp_path: Path) -> None:
    frame = profiles_frame().with_columns(pl.col("updated_at").dt.replace_time_zone(None))
    root = write_repo(tmp_path, data={"profiles": frame})
    with pytest.raises(SourceDataError, match=r"without a time zone .*timezone='UTC'"):
        FeatureStore(root).apply()
    # Declaring the zone they are in converts them: 09:00 in Paris is 08:00 UTC in winter.
    (root / "features.py").write_text(PROFILE_DEFS.replace(
        'timestamp="updated_at")', 'timestamp="updated_at", timezone="Europe/Paris")'))
    store = FeatureStore(root)
    store.apply()
    first = store.sql("SELECT min(updated_at) AS t FROM sources.profiles")["t"][0]
    assert first == T0 - timedelta(hours=1)


def test_null_event_timestamp_names_the_row(tmp_path: Path) -> None:
    frame = profiles_frame().with_columns(
        pl.when(pl.col("age") == 40).then(None).otherwise(pl.col("updated_at")).alias("updated_at"))
    root = write_repo(tmp_path, data={"profiles": frame})
    with pytest.raises(SourceDataError, match=r"1 rows have no value in timestamp column "
                                              r"'updated_at' \(first: row 3 of .*profiles.parquet"):
        FeatureStore(root).apply()


def test_rows_with_null_keys_are_skipped_and_counted(tmp_path: Path) -> None:
    frame = pl.concat([profiles_frame(), profiles_frame().head(1).with_columns(
        user_id=pl.lit(None, pl.Int64))])
    root = write_repo(tmp_path, data={"profiles": frame})
    result = FeatureStore(root).apply()
    assert result.ingested["profiles"].skipped_null_keys == 1
    assert result.built["user_profile"] == 3


def test_csv_source_gives_the_same_training_set_as_parquet(tmp_path: Path) -> None:
    parquet_root = write_repo(tmp_path / "pq")
    csv_root = write_repo(tmp_path / "csv", PROFILE_DEFS.replace("profiles.parquet", "profiles.csv"),
                          data={})
    profiles_frame().write_csv(csv_root / "data" / "profiles.csv")
    expected = FeatureStore(parquet_root)
    expected.apply()
    got = FeatureStore(csv_root)
    got.apply()
    assert got.training_set(LABELS, service="fraud_v1").equals(
        expected.training_set(LABELS, service="fraud_v1"))


def test_changed_data_is_picked_up_by_backfill(tmp_path: Path) -> None:
    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    before = store.training_set(LABELS, features=["user_profile:age"])["age"].to_list()
    profiles_frame().with_columns(age=pl.col("age") + 100).write_parquet(
        root / "data" / "profiles.parquet")
    result = store.backfill()
    assert "profiles" in result.ingested
    after = store.training_set(LABELS, features=["user_profile:age"])["age"].to_list()
    assert after == [a + 100 if a is not None else None for a in before]


def test_unknown_names(tmp_path: Path) -> None:
    store = FeatureStore(write_repo(tmp_path))
    store.apply()
    with pytest.raises(UnknownNameError, match=r"unknown feature service 'fraud_v2'.*fraud_v1"):
        store.training_set(LABELS, service="fraud_v2")
    with pytest.raises(UnknownNameError, match=r"unknown feature 'user_profile:height'"):
        store.training_set(LABELS, features=["user_profile:height"])
    with pytest.raises(UnknownNameError, match=r"unknown feature 'nope'"):
        store.training_set(LABELS, features=["nope"])


def test_duckdb_table_source(tmp_path: Path) -> None:
    import duckdb

    root = write_repo(tmp_path, PROFILE_DEFS.replace('path="data/profiles.parquet"',
                                                     'table="raw_profiles"'), data={})
    con = duckdb.connect(str(root / "offline.duckdb"))
    con.register("frame", profiles_frame())
    con.execute("CREATE TABLE raw_profiles AS SELECT * FROM frame")
    con.close()
    store = FeatureStore(root)
    assert store.apply().built["user_profile"] == 3
    expected_root = write_repo(tmp_path / "pq")
    expected = FeatureStore(expected_root)
    expected.apply()
    assert store.training_set(LABELS, service="fraud_v1").equals(
        expected.training_set(LABELS, service="fraud_v1"))


def test_missing_table_source(tmp_path: Path) -> None:
    root = write_repo(tmp_path, PROFILE_DEFS.replace('path="data/profiles.parquet"',
                                                     'table="raw_profiles"'), data={})
    with pytest.raises(SourceDataError, match=r"Source 'profiles': cannot read table raw_profiles"):
        FeatureStore(root).apply()


def test_unreadable_csv_names_the_file(tmp_path: Path) -> None:
    root = write_repo(tmp_path, PROFILE_DEFS.replace("profiles.parquet", "profiles.csv"), data={})
    (root / "data" / "profiles.csv").write_bytes(b'user_id,updated_at\n1,2024-01-01,extra\n')
    with pytest.raises(SourceDataError, match=r"Source 'profiles': cannot read CSV .*profiles\.csv"):
        FeatureStore(root).apply()


def test_backfill_and_materialize_name_unknown_views(tmp_path: Path, redis_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from featurestore.errors import FeatureStoreError

    monkeypatch.setenv("FEATURESTORE_REDIS_URL", redis_url)  # no managed redis-server left behind
    store = FeatureStore(write_repo(tmp_path))
    store.apply()
    with pytest.raises(FeatureStoreError, match=r"unknown feature view 'nope'"):
        store.backfill(["nope"])
    with pytest.raises(FeatureStoreError, match=r"unknown feature view\(s\) \['nope'\]"):
        store.materialize(views=["nope"])


def test_backfill_refuses_unapplied_definitions(tmp_path: Path) -> None:
    from featurestore.errors import NotAppliedError

    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    (root / "features.py").write_text(PROFILE_DEFS.replace("days=10", "days=12"))
    store.reload()
    with pytest.raises(NotAppliedError, match=r"differ from the registry \(0 added, 3 changed"):
        store.backfill()
