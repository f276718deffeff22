"""How training_set takes its labels: Polars, pandas, Arrow or a Parquet path give the same
result; time zones are never guessed; nanoseconds are floored to microseconds; unusable labels
raise LabelsError naming the column at fault."""

from __future__ import annotations

import math
import struct
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from featurestore.errors import LabelsError

DEFINITIONS = """
from datetime import timedelta

from featurestore import Entity, FeatureService, FeatureView, Field, Source
from featurestore.types import Float64, Int64, String

user = Entity("user", join_keys={"user_id": Int64})
place = Entity("place", join_keys={"user_id": Int64, "city": String})
src = Source("src", path="data/src.parquet", timestamp="ts")
csrc = Source("csrc", path="data/csrc.parquet", timestamp="ts")
v = FeatureView("v", entity=user, source=src, ttl=timedelta(hours=1),
                fields=[Field("x", Float64), Field("s", String)])
w = FeatureView("w", entity=place, source=csrc, fields=[Field("y", Int64)])
both = FeatureService("both", features=[v, w])
"""

T0 = datetime(2024, 3, 31, 0, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)
FEATURES = ["x", "s", "y"]
STATUSES = [f"{f}__status" for f in FEATURES]


def micros(t: datetime) -> int:
    return (t - EPOCH) // US


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    root = tmp_path_factory.mktemp("labels_repo")
    (root / "data").mkdir()
    (root / "featurestore.yaml").write_text("project: pit\n")
    (root / "features.py").write_text(textwrap.dedent(DEFINITIONS))
    ts = pa.timestamp("us", tz="UTC")
    pq.write_table(pa.table({
        "user_id": pa.array([1, 1, 2, 5, 6], pa.int64()),
        "ts": pa.array([T0, T0 + 10 * US, T0, EPOCH, T0 - timedelta(days=1)], ts),
        "x": [1.5, -0.0, math.nan, 5e-324, -math.inf],
        "s": ["a", "é", None, "epoch", "old"],
    }), root / "data" / "src.parquet")
    pq.write_table(pa.table({
        "user_id": pa.array([1, 1, 2], pa.int64()),
        "city": ["Paris", "東京", "Paris"],
        "ts": pa.array([T0, T0, T0 + HOUR], ts),
        "y": pa.array([7, -(2**63), 2**63 - 1], pa.int64()),
    }), root / "data" / "csrc.parquet")
    fs = FeatureStore(root)
    fs.apply()
    return fs


def base_labels() -> pl.DataFrame:
    """Aware UTC microsecond labels touching every status, with a duplicate row."""
    rows = [
        (1, "Paris", T0 + 5 * US, 10),
        (1, "東京", T0 + HOUR, 11),
        (2, "Paris", T0 + HOUR, 12),
        (9, "Paris", T0, 13),  # no history
        (6, "Paris", T0, 14),  # outside the ttl
        (1, "Paris", T0 + 5 * US, 10),  # a duplicate
        (1, "東京", T0 - US, 15),  # before any row
    ]
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "city": [r[1] for r in rows],
         "event_timestamp": [r[2] for r in rows], "target": [r[3] for r in rows]},
        schema={"user_id": pl.Int64, "city": pl.String,
                "event_timestamp": pl.Datetime("us", "UTC"), "target": pl.Int64})


def bits(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else struct.pack("<d", value)
    return value


def feature_cells(out: pl.DataFrame) -> dict[str, list[Any]]:
    table = out.to_arrow()
    return {name: [bits(v) for v in table.column(name).to_pylist()]
            for name in FEATURES + STATUSES}


def run(store: FeatureStore, labels: Any, **kwargs: Any) -> pl.DataFrame:
    return store.training_set(labels, service="both", statuses=True, **kwargs)


def test_expected_values(store: FeatureStore) -> None:
    """The reference result the other tests compare against, checked once by hand."""
    cells = feature_cells(run(store, base_labels()))
    assert cells["x__status"] == ["PRESENT", "PRESENT", "PRESENT", "NOT_FOUND", "OUTSIDE_TTL",
                                  "PRESENT", "NOT_FOUND"]
    assert cells["x"] == [bits(1.5), bits(-0.0), "nan", None, None, bits(1.5), None]
    assert cells["s"] == ["a", "é", None, None, None, "a", None]
    assert cells["s__status"][2] == "NULL"
    assert cells["y"] == [7, -(2**63), 2**63 - 1, None, None, 7, None]
    assert cells["y__status"][-1] == "NOT_FOUND"


def test_polars_pandas_arrow_and_parquet_agree(store: FeatureStore, tmp_path: Path) -> None:
    labels = base_labels()
    expected = run(store, labels)
    assert expected.columns[:4] == labels.columns
    assert expected.select(labels.columns).equals(labels)
    path = tmp_path / "labels.parquet"
    labels.write_parquet(path)
    chunked = pa.concat_tables([labels.to_arrow().slice(0, 3), labels.to_arrow().slice(3)])
    for variant in (labels.to_pandas(), labels.to_arrow(), chunked, path, str(path),
                    labels.with_columns(pl.col("city").cast(pl.Categorical))):
        out = run(store, variant)
        assert out.columns == expected.columns, type(variant)
        assert feature_cells(out) == feature_cells(expected), type(variant)
        assert out.select("user_id", "event_timestamp", "target").equals(
            expected.select("user_id", "event_timestamp", "target")), type(variant)
        assert out["city"].cast(pl.String).to_list() == labels["city"].to_list()


def test_other_units_and_zones_agree(store: FeatureStore) -> None:
    labels = base_labels()
    expected = feature_cells(run(store, labels))
    ts = pl.col("event_timestamp")
    for variant in (labels.with_columns(ts.dt.cast_time_unit("ns")),
                    labels.with_columns(ts.dt.convert_time_zone("Asia/Tokyo")),
                    labels.with_columns(ts.dt.convert_time_zone("America/New_York")
                                        .dt.cast_time_unit("ns"))):
        assert feature_cells(run(store, variant)) == expected


def test_naive_timestamps_are_refused(store: FeatureStore) -> None:
    naive = base_labels().with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    with pytest.raises(LabelsError, match=r"event_timestamp.*time zone"):
        run(store, naive)
    with pytest.raises(LabelsError, match="event_timestamp"):
        run(store, naive.to_arrow())
    with pytest.raises(LabelsError, match="event_timestamp"):
        run(store, naive.to_pandas())


def test_naive_timestamps_with_timezone(store: FeatureStore) -> None:
    labels = base_labels()
    expected = feature_cells(run(store, labels))
    naive = labels.with_columns(pl.col("event_timestamp").dt.replace_time_zone(None))
    out = run(store, naive, timezone="UTC")
    assert feature_cells(out) == expected
    assert out.select(naive.columns).equals(naive)  # the label columns as they were given
    assert feature_cells(run(store, naive.to_pandas(), timezone="UTC")) == expected
    paris = labels.with_columns(pl.col("event_timestamp").dt.convert_time_zone("Europe/Paris")
                                .dt.replace_time_zone(None))
    assert feature_cells(run(store, paris, timezone="Europe/Paris")) == expected


@pytest.mark.parametrize(("local", "zone"), [
    (datetime(2024, 3, 31, 2, 30), "Europe/Paris"),  # skipped by the DST change
    (datetime(2024, 10, 27, 2, 30), "Europe/Paris"),  # happens twice
    (datetime(2024, 1, 1), "Not/A_Zone"),  # no such zone
])
def test_naive_times_that_do_not_map_to_one_instant(store: FeatureStore, local: datetime,
                                                    zone: str) -> None:
    """A user-fixable labels problem: LabelsError naming the column, not a pyarrow error."""
    labels = pl.DataFrame({"user_id": [1], "city": ["Paris"],
                           "event_timestamp": pl.Series([local], dtype=pl.Datetime("us"))})
    with pytest.raises(LabelsError, match="event_timestamp"):
        run(store, labels, timezone=zone)


def ns_labels(times_ns: list[int], users: list[int], unit_tz: str | None = "UTC") -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": pl.Series(users, dtype=pl.Int64),
        "city": ["Paris"] * len(users),
        "event_timestamp": pl.Series(times_ns, dtype=pl.Int64).cast(pl.Datetime("ns", unit_tz)),
    })


def test_nanoseconds_are_floored_to_microseconds(store: FeatureStore) -> None:
    e = micros(T0 + 10 * US) * 1000  # user 1's second row, in ns
    edge = e + 3600 * 10**9  # exactly at the ttl edge
    cases = [
        (1, e + 999, "PRESENT", bits(-0.0)),  # floored onto the row's event time
        (1, e - 1, "PRESENT", bits(1.5)),  # floored to 1 us before it: the first row
        (1, edge + 999, "PRESENT", bits(-0.0)),  # floored onto the ttl edge: still visible
        (1, edge + 1000, "OUTSIDE_TTL", None),
        (5, 0, "PRESENT", bits(5e-324)),  # user 5's row is at the epoch
        (5, -1, "NOT_FOUND", None),  # floored to -1 us, not truncated to 0
        (5, -999, "NOT_FOUND", None),
    ]
    users, times = [c[0] for c in cases], [c[1] for c in cases]
    for labels, tz in ((ns_labels(times, users), None),
                       (ns_labels(times, users, None), "UTC")):
        out = run(store, labels, timezone=tz)
        cells = feature_cells(out)
        assert list(zip(cells["x__status"], cells["x"], strict=True)) == [
            (c[2], c[3]) for c in cases]
        assert out["event_timestamp"].to_list() == labels["event_timestamp"].to_list()
        floored = ns_labels([t // 1000 * 1000 for t in times], users)
        assert feature_cells(run(store, floored)) == cells
    pandas_labels = ns_labels(times, users).to_pandas()  # pandas' own ns datetimes
    assert feature_cells(run(store, pandas_labels))["x__status"] == [c[2] for c in cases]


# ---------------------------------------------------------------- unusable labels


def test_missing_entity_column(store: FeatureStore) -> None:
    for column in ("user_id", "city"):
        with pytest.raises(LabelsError, match=column):
            run(store, base_labels().drop(column))


def test_null_keys(store: FeatureStore) -> None:
    labels = base_labels()
    with_null_id = labels.with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("user_id"))
        .alias("user_id"))
    with pytest.raises(LabelsError, match="user_id"):
        run(store, with_null_id)
    with pytest.raises(LabelsError, match="city"):
        run(store, labels.with_columns(pl.lit(None, pl.String).alias("city")))
    with pytest.raises(LabelsError, match="user_id"):
        run(store, with_null_id.to_pandas())


@pytest.mark.parametrize(("column", "values"), [
    ("user_id", pl.Series(["1"] * 7)),
    ("user_id", pl.Series([1.0] * 7)),
    ("user_id", pl.Series([True] * 7)),
    ("user_id", pl.Series([2**64 - 1] * 7, dtype=pl.UInt64)),  # does not fit Int64
    ("city", pl.Series([1] * 7)),
    ("city", pl.Series([b"Paris"] * 7)),
])
def test_wrong_key_type(store: FeatureStore, column: str, values: pl.Series) -> None:
    with pytest.raises(LabelsError, match=column):
        run(store, base_labels().with_columns(values.alias(column)))


def test_other_integer_key_types_are_accepted(store: FeatureStore) -> None:
    labels = base_labels()
    expected = feature_cells(run(store, labels))
    for dtype in (pl.Int32, pl.UInt16, pl.Int8):
        assert feature_cells(run(store, labels.with_columns(pl.col("user_id").cast(dtype)))) \
            == expected


def test_empty_labels(store: FeatureStore) -> None:
    with pytest.raises(LabelsError, match="no rows"):
        run(store, base_labels().clear())
    with pytest.raises(LabelsError, match="no rows"):
        run(store, base_labels().to_arrow().slice(0, 0))


def test_missing_timestamp_column(store: FeatureStore) -> None:
    with pytest.raises(LabelsError, match="event_timestamp"):
        run(store, base_labels().drop("event_timestamp"))
    with pytest.raises(LabelsError, match="as_of"):
        run(store, base_labels(), timestamp="as_of")
    renamed = base_labels().rename({"event_timestamp": "as_of"})
    assert feature_cells(run(store, renamed, timestamp="as_of")) == \
        feature_cells(run(store, base_labels()))


def test_unusable_timestamp_column(store: FeatureStore) -> None:
    labels = base_labels()
    as_text = labels.with_columns(pl.col("event_timestamp").cast(pl.String))
    with pytest.raises(LabelsError, match="event_timestamp"):
        run(store, as_text)
    with_null = labels.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("event_timestamp"))
        .alias("event_timestamp"))
    with pytest.raises(LabelsError, match="event_timestamp"):
        run(store, with_null)


def test_unsupported_labels_object(store: FeatureStore, tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="Polars, pandas or Arrow table or a Parquet path"):
        run(store, [{"user_id": 1}])
    with pytest.raises(LabelsError, match=r"missing\.parquet does not exist"):
        run(store, tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(LabelsError, match=r"junk\.parquet is not a readable Parquet file"):
        run(store, tmp_path / "junk.parquet")


def test_label_column_named_like_a_feature(store: FeatureStore) -> None:
    with pytest.raises(LabelsError, match="'x'"):
        run(store, base_labels().with_columns(pl.lit(1.0).alias("x")))
