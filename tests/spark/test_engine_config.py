"""Choosing the offline engine: featurestore.yaml's offline_engine, the per-call engine, and
the errors that name the key and the fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from repo_kit import PROFILE_DEFS, T0, write_repo
from serving_kit import cli
from typer.testing import CliRunner

from featurestore import FeatureStore
from featurestore.cli import app
from featurestore.errors import FeatureStoreError
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


def test_cli_names_the_bad_engine(tmp_path: Path) -> None:
    for command in ("backfill", "materialize"):
        proc = cli(command, "--engine", "dask", "--repo", write_repo(tmp_path), expect=1)
        assert "--engine must be one of duckdb, spark, got 'dask'" in proc.stderr + proc.stdout


def test_spark_training_set_needs_a_spark_backfill(tmp_path: Path, spark: Any) -> None:
    """Through the CLI's --engine, in this process (so on the running local Spark)."""
    root = write_repo(tmp_path)
    FeatureStore(root).apply()
    labels = tmp_path / "labels.parquet"
    pl.DataFrame({"user_id": [1, 2, 3], "event_timestamp": [T0, T0 + timedelta(days=1), T0],
                  "amount": [1.0, 2.0, 3.0]}).write_parquet(labels)
    out = tmp_path / "training.parquet"
    asked = ["training-set", str(labels), "-o", str(out), "--service", "fraud_v1",
             "--statuses", "--repo", str(root), "--engine", "spark"]
    refused = CliRunner().invoke(app, asked)
    assert refused.exit_code == 1 and "backfill --engine spark" in refused.output
    built = CliRunner().invoke(app, ["backfill", "--repo", str(root), "--engine", "spark"])
    assert built.exit_code == 0 and "built feature table user_profile: 3 rows" in built.output
    assert CliRunner().invoke(app, asked).exit_code == 0
    got = pl.read_parquet(out)
    assert got["age"].to_list() == [30, 40, None]
    assert got["age__status"].to_list() == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert got["amount_to_limit"].to_list() == [0.01, 0.04, None]


def test_spark_materialize_needs_a_spark_backfill(tmp_path: Path, spark: Any, redis_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before any flip: the served storage stays the one the DuckDB engine wrote;
    after a Spark backfill the Spark engine's materialization is served."""
    monkeypatch.setenv("FEATURESTORE_REDIS_URL", redis_url)
    root = write_repo(tmp_path, project=f"sparkmat{tmp_path.name[-12:].replace('-', '_')}")
    store = FeatureStore(root)
    store.apply()
    asked = ["materialize", "--repo", str(root), "--view", "user_profile", "--end",
             "2024-01-05", "--engine"]
    assert CliRunner().invoke(app, [*asked, "duckdb"]).exit_code == 0
    with store.online() as online:
        before = online.served()["user_profile"].storage
    expected = read(store)
    assert expected["age"][:2] == [31, 40], expected
    refused = CliRunner().invoke(app, [*asked, "spark"])
    assert refused.exit_code == 1 and "backfill --engine spark" in refused.output
    with store.online() as online:
        assert online.served()["user_profile"].storage == before
    assert CliRunner().invoke(app, ["backfill", "--repo", str(root), "--engine",
                                    "spark"]).exit_code == 0
    done = CliRunner().invoke(app, [*asked, "spark"])
    assert done.exit_code == 0, done.output
    with store.online() as online:
        assert online.served()["user_profile"].storage != before
    assert read(store) == expected
    (root / "features.py").write_text(PROFILE_DEFS.replace("days=10", "days=12"))
    unapplied = CliRunner().invoke(app, [*asked, "spark"])
    assert unapplied.exit_code == 1 and "differ from the registry" in unapplied.output


def read(store: FeatureStore) -> dict[str, list[Any]]:
    return store.get_online_features(
        features=["user_profile:age", "user_profile:country", "user_profile:credit_limit"],
        entities={"user_id": [1, 2, 3]}, as_of=datetime(2024, 1, 5, tzinfo=UTC)
    ).to_dict(statuses=True)
