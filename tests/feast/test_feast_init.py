"""The repo `feast init` creates (Feast 0.67), converted by `featurestore import-feast` and
applied without hand edits, gives Feast's `get_historical_features` values on the same labels:
its created column is zone-less and set to the time of `feast init` (after every event), so
it only works with Feast's meaning of created (a tie-break) and zone-less timestamps read as
UTC."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast_kit import init_and_import

from featurestore import FeatureStore

feast = pytest.importorskip("feast", reason="Feast is installed by `make install` "
                                              "(the feast extra); run make install")

KEY = ["driver_id", "event_timestamp", "val_to_add", "val_to_add_2"]
# What has no featurestore equivalent in that repo, and is named instead of dropped.
NOT_CONVERTED = {
    *(f"feature {view}:{name}: type {kind} has no featurestore equivalent"
      for view in ("driver_hourly_stats", "driver_hourly_stats_fresh")
      for name, kind in (("driver_metadata", "Map"), ("driver_config", "Json"),
                         ("driver_profile", "Struct({name: String, age: String})"))),
    "label view driver_quality_labels: not supported by featurestore",
    *(f"feature service driver_activity_v{v}: written without {view}:driver_metadata, "
      f"{view}:driver_config, {view}:driver_profile (not converted, see above)"
      for v, view in ((2, "driver_hourly_stats"), (3, "driver_hourly_stats_fresh"))),
}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(Feast's repo, the converted repo, the import's output)."""
    return init_and_import(tmp_path_factory.mktemp("feast_init"))


def test_import_names_what_it_changed_and_what_it_left_out(repos: tuple[Path, Path, str]
                                                           ) -> None:
    _, converted, output = repos
    lines = output.splitlines()
    assert ('note: source driver_hourly_stats_source: zone-less timestamps (created) are read as '
            'UTC, as Feast does (declared timezone="UTC")') in lines
    assert ("note: source driver_hourly_stats_source: created column created only breaks ties "
            'between rows of equal event time, as in Feast (declared created_role="tie_break")'
            ) in lines
    assert {line.removeprefix("not converted: ") for line in lines
            if line.startswith("not converted: ")} == NOT_CONVERTED
    definitions = (converted / "features.py").read_text()
    assert 'created="created", created_role="tie_break", timezone="UTC"' in definitions
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(converted.stat().st_mode) == 0o777 & ~umask


def labels(data: pd.DataFrame) -> pd.DataFrame:
    """200 labels over the data's last 16 days and 2 days beyond, one driver never seen."""
    rng = np.random.default_rng(7)
    end = data["event_timestamp"].max()
    start = end - pd.Timedelta(days=16)
    n = 200
    times = start.value + rng.integers(0, (end - start).value + 2 * 86_400 * 10**9, n)
    return pd.DataFrame({
        "driver_id": rng.choice([1001, 1002, 1003, 1004, 1005, 1099], n),
        "event_timestamp": pd.to_datetime(times, utc=True).floor("us"),
        "val_to_add": rng.integers(0, 100, n), "val_to_add_2": rng.integers(0, 100, n)})


def same(ours: pd.Series, theirs: pd.Series) -> pd.Series:
    a, b = ours.astype("float64"), theirs.astype("float64")  # Feast's float32 widens exactly
    return (a.isna() & b.isna()) | (a == b)


@pytest.mark.parametrize("service, names", [
    ("driver_activity_v1", {"conv_rate": "conv_rate", "conv_rate_plus_val1": "conv_rate_plus_val1",
                            "conv_rate_plus_val2": "conv_rate_plus_val2"}),
    ("driver_activity_v3", {"conv_rate": "conv_rate", "acc_rate": "acc_rate",
                            "avg_daily_trips": "avg_daily_trips",
                            "transformed_conv_rate_fresh_conv_rate_plus_val1": "conv_rate_plus_val1",
                            "transformed_conv_rate_fresh_conv_rate_plus_val2":
                                "conv_rate_plus_val2"}),
])
def test_training_set_equals_feast_historical_features(
        repos: tuple[Path, Path, str], service: str, names: dict[str, str]) -> None:
    feast_repo, converted, _ = repos
    store = FeatureStore(converted)
    store.apply()  # no hand edits
    subprocess.run([sys.executable, "-m", "feast.cli.cli", "apply"], cwd=feast_repo,
                   check=True, capture_output=True)
    theirs = feast.FeatureStore(repo_path=str(feast_repo))
    asked = labels(pd.read_parquet(feast_repo / "data" / "driver_stats.parquet"))
    ours = store.training_set(asked, service=service).to_pandas()
    assert ours.columns.tolist() == [*asked.columns, *names]
    feast_rows = theirs.get_historical_features(
        entity_df=asked, features=theirs.get_feature_service(service)).to_df()
    joined = feast_rows.merge(ours, on=KEY, suffixes=("_feast", "_ours"), validate="1:1")
    assert len(joined) == len(feast_rows)
    for ours_name, feast_name in names.items():
        mine = joined[ours_name if ours_name != feast_name else f"{ours_name}_ours"]
        agree = same(mine, joined[f"{feast_name}_feast" if ours_name == feast_name
                                  else feast_name])
        assert agree.all(), joined.loc[~agree, [*KEY, ours_name]].head()
    assert joined["conv_rate_ours"].notna().sum() >= 100, "most labels should have values"
    # Feast's file store drops the label rows whose driver has no row within [T - 1 day, T]
    # (feast-dev/feast#6787's store); ours keeps them, with no value.
    dropped = ours.merge(feast_rows[KEY], on=KEY, how="left", indicator=True)
    dropped = dropped[dropped["_merge"] == "left_only"]
    assert len(dropped) + len(feast_rows) == len(asked)
    assert dropped["conv_rate"].isna().all()
