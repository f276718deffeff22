"""`featurestore import-feast` on real Feast repos (Feast 0.67 installed by `make install`):
the converted repo applies, and its training sets equal Feast's historical features, python
on-demand views included; what does not convert is named, and then nothing is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import redis

from featurestore import FeatureStore
from featurestore.feast_import import FeastImportError, import_feast

feast = pytest.importorskip("feast", reason="Feast is installed by `make install` "
                                              "(the feast extra); run make install")

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CONFIG = """
project: drivers
registry: data/registry.db
provider: local
online_store:
    type: sqlite
    path: data/online.db
entity_key_serialization_version: 3
"""
DEFINITIONS = """
from datetime import timedelta
import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"])
stats_source = FileSource(name="stats_source", path="data/stats.parquet",
                          timestamp_field="event_timestamp", created_timestamp_column="created")
stats = FeatureView(name="driver_stats", entities=[driver], ttl=timedelta(days=2),
                    schema=[Field(name="conv_rate", dtype=Float64),
                            Field(name="trips", dtype=Int64), Field(name="city", dtype=String)],
                    source=stats_source)
request = RequestSource(name="ride", schema=[Field(name="fare", dtype=Float64)])

@on_demand_feature_view(sources=[stats, request], mode="python",
                        schema=[Field(name="fare_per_conv", dtype=Float64)])
def per_ride(inputs):
    outputs = {}
    outputs["fare_per_conv"] = [f * c + 1.0 if c is not None else None
                                for f, c in zip(inputs["fare"], inputs["conv_rate"])]
    return outputs

# Singleton mode: converted, but Feast 0.67 hands it lists in get_historical_features (so it
# is not in the service the oracle compares).
@on_demand_feature_view(sources=[stats, request], mode="python", singleton=True,
                        schema=[Field(name="fare_minus_conv", dtype=Float64)])
def per_ride_singleton(inputs):
    return {"fare_minus_conv": inputs["fare"] - inputs["conv_rate"]}

@on_demand_feature_view(sources=[stats], mode="python",
                        schema=[Field(name="trips_doubled", dtype=Int64)])
def doubled(inputs):
    return {"trips_doubled": [t * 2 for t in inputs["trips"]]}

# Loop style: the loop's assignments become the transform's body.
@on_demand_feature_view(sources=[stats, request], mode="python",
                        schema=[Field(name="fare_scaled", dtype=Float64)])
def looped(inputs):
    out = {"fare_scaled": []}
    for f, c in zip(inputs["fare"], inputs["conv_rate"]):
        doubled_fare = f * 2.0
        out["fare_scaled"].append(doubled_fare / (c + 1.0))
    return out

# Pandas mode, element-wise: the same expression on one row.
@on_demand_feature_view(sources=[stats, request],
                        schema=[Field(name="fare_plus_trips", dtype=Float64)])
def pandas_sum(inputs: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame()
    df["fare_plus_trips"] = inputs["fare"] + inputs["trips"] * 0.5
    return df

service = FeatureService(name="drivers_v1",
                         features=[stats, per_ride, doubled, looped, pandas_sum])
"""


def feast_repo(root: Path, extra: str = "") -> Path:
    repo = root / "feast_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(CONFIG)
    (repo / "definitions.py").write_text(textwrap.dedent(DEFINITIONS) + extra)
    rng = np.random.default_rng(5)
    n = 400
    drivers = rng.integers(1, 30, n)
    # drivers 25-29 stop after the first day, so their values expire (ttl 2 days) by the end
    seconds = np.where(drivers >= 25, rng.integers(0, 86400, n), rng.integers(0, 5 * 86400, n))
    events = [T0 + timedelta(seconds=int(s)) for s in seconds]
    # Created up to 3 days after the event: in Feast it only breaks ties, never hides a row
    # (created_role="tie_break" in the converted source); some rows tie on event time.
    created = [e + timedelta(seconds=int(d)) for e, d in zip(
        events, rng.integers(0, 3 * 86400, n), strict=True)]
    events[1::50] = events[0::50][:len(events[1::50])]
    pd.DataFrame({
        "driver_id": drivers,
        "event_timestamp": pd.to_datetime(events, utc=True),
        "created": pd.to_datetime(created, utc=True),
        "conv_rate": rng.random(n),
        "trips": rng.integers(0, 500, n),
        "city": rng.choice(["Oslo", "Lima", "Pune"], n),
    }).to_parquet(repo / "data" / "stats.parquet")
    return repo


def labels() -> pd.DataFrame:
    rng = np.random.default_rng(6)
    n = 300
    return pd.DataFrame({
        "driver_id": rng.integers(1, 32, n),  # some drivers never seen
        "event_timestamp": pd.to_datetime([T0 + timedelta(seconds=int(s)) for s in
                                           rng.integers(3600, 5 * 86400, n)], utc=True),
        "fare": rng.random(n) * 50})


def matches(ours: pd.DataFrame, theirs: pd.DataFrame, columns: list[str]) -> None:
    """Feast's rows equal ours, value for value (nulls alike)."""
    key = ["driver_id", "event_timestamp", "fare"]
    joined = theirs.merge(ours, on=key, how="left", suffixes=("_feast", ""), validate="1:1")
    assert len(joined) == len(theirs)
    for column in columns:
        for x, y in zip(joined[column].tolist(), joined[f"{column}_feast"].tolist(),
                        strict=True):
            missing = x is None or (isinstance(x, float) and np.isnan(x))
            assert missing == (y is None or pd.isna(y)), (column, x, y)
            if not missing:
                assert x == y, (column, x, y)


def dropped_by_feast(ours: pd.DataFrame, theirs: pd.DataFrame, events: pd.DataFrame
                     ) -> None:
    """Feast 0.67's file offline store drops the label rows of an entity it has data for but
    no row within [T - ttl, T] (a never-seen entity keeps its row, with nulls); we keep every
    label row, with NOT_FOUND or OUTSIDE_TTL values. Asserted exactly, so that a change on
    either side shows. No Feast issue reports this case yet; feast-dev/feast#6787 is the same
    store silently dropping label rows for another cause (rows sharing a key and time)."""
    ttl = pd.Timedelta(days=2)
    known = set(events["driver_id"])
    in_window = [any((g >= t - ttl) & (g <= t)) for d, t in
                 zip(ours["driver_id"], ours["event_timestamp"], strict=True)
                 for g in [events.loc[events["driver_id"] == d, "event_timestamp"]]]
    expected = [d in known and not w for d, w in zip(ours["driver_id"], in_window, strict=True)]
    key = ["driver_id", "event_timestamp", "fare"]
    kept = ours.merge(theirs[key], on=key, how="left", indicator=True)["_merge"] == "both"
    assert (~kept).tolist() == expected
    assert ours.loc[~kept.to_numpy(), "conv_rate"].isna().all()


def test_import_applies_and_matches_feast_historical_features(tmp_path: Path) -> None:
    repo = feast_repo(tmp_path)
    result = import_feast(repo, tmp_path / "converted")
    assert not result.skipped
    assert "feature view driver_stats" in result.converted
    assert "on-demand feature view per_ride_singleton (1 transforms)" in result.converted
    store = FeatureStore(tmp_path / "converted")
    store.apply()
    subprocess.run([sys.executable, "-m", "feast.cli.cli", "apply"], cwd=repo, check=True,
                   capture_output=True)
    theirs = feast.FeatureStore(repo_path=str(repo))
    # Random label times, unseen drivers and expired values included: the view's features.
    views = ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city"]
    ours = store.training_set(labels(), features=views).to_pandas()
    feast_rows = theirs.get_historical_features(entity_df=labels(), features=views).to_df()
    assert len(ours) == len(labels()) > len(feast_rows)
    dropped_by_feast(ours, feast_rows, pd.read_parquet(repo / "data" / "stats.parquet"))
    matches(ours, feast_rows, ["conv_rate", "trips", "city"])
    # Labels where every driver has a value (Feast's python functions get None otherwise):
    # the whole service, on-demand features included.
    events = pd.read_parquet(repo / "data" / "stats.parquet").drop_duplicates(
        ["driver_id", "event_timestamp"])
    at_events = pd.DataFrame({"driver_id": events["driver_id"],
                              "event_timestamp": events["event_timestamp"] + pd.Timedelta("1s"),
                              "fare": np.linspace(1.0, 60.0, len(events))})
    matches(store.training_set(at_events, service="drivers_v1").to_pandas(),
            theirs.get_historical_features(
                entity_df=at_events, features=theirs.get_feature_service("drivers_v1")).to_df(),
            ["conv_rate", "trips", "city", "fare_per_conv", "trips_doubled", "fare_scaled",
             "fare_plus_trips"])
    single = store.training_set(at_events, features=["fare_minus_conv", "driver_stats:conv_rate"])
    assert single["fare_minus_conv"].to_list() == [
        f - c for f, c in zip(single["fare"], single["conv_rate"], strict=True)]


def test_what_does_not_convert_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    extra = textwrap.dedent("""
        from feast.types import Array
        tags = FeatureView(name="driver_tags", entities=[driver], source=stats_source,
                           schema=[Field(name="labels", dtype=Array(String))])

        @on_demand_feature_view(sources=[stats], schema=[Field(name="as_frame", dtype=Float64)])
        def pandas_mode(inputs):
            return pd.DataFrame({"as_frame": inputs["conv_rate"].clip(0, 1) * inputs["driver_id"]})

        @on_demand_feature_view(sources=[stats], mode="python",
                                schema=[Field(name="looped", dtype=Float64)])
        def python_loop(inputs):
            out = {"looped": []}
            for c in inputs["conv_rate"]:
                if c > 0.5:
                    c = 0.5
                out["looped"].append(c)
            return out
        """)
    repo = feast_repo(tmp_path, extra)
    out = tmp_path / "converted"
    with pytest.raises(FeastImportError) as raised:
        import_feast(repo, out)
    message = str(raised.value)
    assert "feature driver_tags:labels: type Array(String) has no featurestore equivalent" \
        in message
    assert ("on-demand feature pandas_mode:as_frame: `inputs['conv_rate'].clip(0, 1)` is not "
            "element-wise") in message
    assert ("; it cannot run as plain Python either: it reads driver_id, not among the view's "
            "features and request inputs") in message
    assert "python_loop" not in message  # a loop with a branch runs as plain Python
    assert not out.exists() and not list(tmp_path.glob(".import-*"))
    partial = import_feast(repo, out, partial=True)
    assert "feature view driver_stats" in partial.converted
    assert "on-demand feature view python_loop (1 transforms)" in partial.converted
    FeatureStore(out).apply()


def test_bad_input(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(FeastImportError, match=r"is not a Feast repo: it has no "
                                               r"feature_store\.yaml"):
        import_feast(tmp_path / "plain", tmp_path / "out1")
    broken = feast_repo(tmp_path, "\nraise RuntimeError('broken definitions')\n")
    with pytest.raises(FeastImportError, match=r"Feast could not load the definitions .*broken"):
        import_feast(broken, tmp_path / "out2")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(FeastImportError, match="exists and is not empty"):
        import_feast(broken, tmp_path / "taken")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_cli(tmp_path: Path) -> None:
    repo = feast_repo(tmp_path)
    run = [sys.executable, "-m", "featurestore.cli", "import-feast", str(repo), "-o"]
    ok = subprocess.run([*run, str(tmp_path / "out")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "converted feature view driver_stats" in ok.stdout
    assert "converted on-demand feature view per_ride (1 transforms)" in ok.stdout
    bad = subprocess.run([*run, str(tmp_path / "out")], capture_output=True, text=True)
    assert bad.returncode == 1 and "exists and is not empty" in bad.stderr
    frame = pl.read_parquet(repo / "data" / "stats.parquet")
    assert frame.height == 400


def test_online_values_match_feast_in_the_same_redis(tmp_path: Path, redis_url: str) -> None:
    """Both materialize into one real Redis (Feast in database 1, us in 2) and serve the same
    drivers; values agree wherever Feast is right."""
    from redis_kit import online_of

    from featurestore.definitions.types import Int64
    from featurestore.online.lookup import Lookup
    from featurestore.values.columns import from_arrow, to_arrow

    base = redis_url.rsplit("/", 1)[0]
    host_port = base.removeprefix("redis://")
    repo = feast_repo(tmp_path)
    config = (repo / "feature_store.yaml").read_text().replace(
        "    type: sqlite\n    path: data/online.db",
        f"    type: redis\n    connection_string: \"{host_port},db=1\"")
    (repo / "feature_store.yaml").write_text(config)
    import_feast(repo, tmp_path / "converted")
    ours_config = tmp_path / "converted" / "featurestore.yaml"
    ours_config.write_text(ours_config.read_text().replace("managed", f"{base}/2"))
    events = pd.read_parquet(repo / "data" / "stats.parquet")
    end = events["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)

    subprocess.run([sys.executable, "-m", "feast.cli.cli", "apply"], cwd=repo, check=True,
                   capture_output=True)
    theirs = feast.FeatureStore(repo_path=str(repo))
    theirs.materialize(start_date=T0 - timedelta(days=1), end_date=end)
    store = FeatureStore(tmp_path / "converted")
    store.apply()
    store.materialize(end=end)

    drivers = list(range(1, 32))  # 30 and 31 never seen
    features = ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:city"]
    feast_values = theirs.get_online_features(
        features=features, entity_rows=[{"driver_id": d} for d in drivers]).to_dict()
    client = redis.Redis.from_url(f"{base}/2")
    plan = store.plan
    selection = plan.select(features=features)
    online = online_of(client, plan.project)
    lookup = Lookup(plan.project, plan, selection, online.served())
    as_of = int((end - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    result = online.read(lookup, {"driver_id": from_arrow(pa.array(drivers), Int64)}, {}, as_of)
    online.close()
    client.close()
    latest = events.sort_values(["event_timestamp", "created"]).groupby("driver_id").last()
    expired = 0
    for f in result.features:
        ours = to_arrow(f.column, f.dtype).to_pylist()
        for i, d in enumerate(drivers):
            status, theirs_value = int(f.status[i]), feast_values[f.name][i]
            if status == 3:  # OUTSIDE_TTL: Feast serves the stale value (feast-dev/feast#6821)
                expired += 1
                assert ours[i] is None and theirs_value == latest.loc[d, f.name]
            elif status == 2:  # NOT_FOUND
                assert ours[i] is None and theirs_value is None
            else:
                assert ours[i] == theirs_value, (f.name, d, ours[i], theirs_value)
    assert expired > 0, "the data should exercise the ttl difference"
