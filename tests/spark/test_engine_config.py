"""Choosing the offline engine: featurestore.yaml's offline_engine, the per-call engine, and
the errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from repo_kit import T0, write_repo

from featurestore import FeatureStore
from featurestore.errors import FeatureStoreError, NotAppliedError
from featurestore.repo import load_config


def test_offline_engine_is_read_and_checked(tmp_path: Path) -> None:
    root = write_repo(tmp_path)
    assert load_config(root).offline_engine == "duckdb"
    config = root / "featurestore.yaml"
    config.write_text("project: test\noffline_engine: spark\nspark_master: spark://h:7077\n"
                      "spark_tables: s3a://bucket/tables\n")
    loaded = load_config(root)
    assert (loaded.offline_engine, loaded.spark_master, loaded.spark_tables_url) == (
        "spark", "spark://h:7077", "s3a://bucket/tables")
    config.write_text("project: test\noffline_engine: sparky\n")
    with pytest.raises(FeatureStoreError, match=r"offline_engine is 'sparky'.*duckdb, spark"):
        load_config(root)


def test_engine_argument_is_checked(tmp_path: Path) -> None:
    store = FeatureStore(write_repo(tmp_path))
    with pytest.raises(FeatureStoreError, match=r"engine is 'dask'.*--engine duckdb\|spark"):
        store.backfill(engine="dask")


def test_spark_training_set_needs_a_spark_backfill(tmp_path: Path, spark: Any) -> None:
    store = FeatureStore(write_repo(tmp_path))
    labels = pl.DataFrame({"user_id": [1], "event_timestamp": [T0], "amount": [1.0]})
    with pytest.raises(NotAppliedError, match="backfill --engine spark"):
        store.training_set(labels, service="fraud_v1", engine="spark")
    store.backfill(engine="spark")
    got = store.training_set(labels, service="fraud_v1", engine="spark", statuses=True)
    assert got["age"].to_list() == [30] and got["age__status"].to_list() == [
        "PRESENT"]
