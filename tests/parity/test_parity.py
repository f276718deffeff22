"""Parity: for generated schemas and data, the value served online at T equals the training-set
value at T, bit for bit (NaN, -0.0, infinities, subnormals, int64 extremes, unicode), with the
same status, after materializing as of T into a real Redis. Several increasing T per example
exercise write-if-newer overwrites."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_kit import both_backends, online_of, redis_client
from serving_kit import Server, start_server, stop_server

from featurestore import Client, FeatureStore
from featurestore.online.lookup import Lookup
from featurestore.values.columns import from_arrow, to_arrow
from featurestore.values.status import STATUS_NAMES

BASE = datetime(2025, 6, 1, tzinfo=UTC)
TYPES = ["Int64", "Float64", "Bool", "String", "Timestamp"]
POLARS = {"Int64": pl.Int64, "Float64": pl.Float64, "Bool": pl.Boolean, "String": pl.String,
          "Timestamp": pl.Datetime("us", "UTC")}
_projects = itertools.count()
# Against one Redis and a 3-master Redis Cluster alike (redis_kit.both_backends).
online_url = pytest.fixture(scope="module", params=["redis", "cluster"])(both_backends)

floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [-0.0, 0.0, 5e-324, -5e-324, float("nan"), float("inf"), float("-inf"), 1.7976931348623157e308])
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "Int64": st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-(2**63), 2**63 - 1, 0]),
    "Float64": floats,
    "Bool": st.booleans(),
    "String": st.text(max_size=6) | st.sampled_from(["", "ü", "日本", "😀", "a|b{c}%"]),
    "Timestamp": st.integers(-(2**50), 2**52).map(lambda us: datetime(1970, 1, 1, tzinfo=UTC)
                                                 + timedelta(microseconds=us)),
}


KEY_SETS = [{"k": "Int64"}, {"k": "String"}, {"k": "Int64", "k2": "String"}]
# A created column's role (None: no created column). Under "tie_break" a row's created time
# may be before or after its event time and never hides it.
CREATED = [None, "visibility", "tie_break"]
# The schema the gRPC test serves: every type, a created column, a ttl, a composite key.
FIXED = {"keys": {"k": "Int64", "k2": "String"}, "fields": TYPES, "created": "visibility",
         "ttl_min": 90}


@st.composite
def scenarios(draw: st.DrawFn, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A schema (or the given one) and data for it."""
    if schema is None:
        schema = {"keys": draw(st.sampled_from(KEY_SETS)),
                  "fields": draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=5)),
                  "created": draw(st.sampled_from(CREATED)),
                  "ttl_min": draw(st.none() | st.integers(60, 600))}
    keys, fields, created, ttl_min = (schema["keys"], schema["fields"], schema["created"],
                                      schema["ttl_min"])
    key_values = {"Int64": st.integers(-3, 3) | st.sampled_from([-(2**63), 2**63 - 1]),
                  "String": st.sampled_from(["a", "b", "", "é", "x|y"])}
    minute = st.integers(0, 40)
    row = st.fixed_dictionaries({
        **{k: key_values[t] for k, t in keys.items()},
        "ts": minute,
        "delay": (st.integers(-10, 10) if created == "tie_break" else st.integers(0, 10)
                  if created else st.just(0)),
        **{f"f{i}": st.none() | VALUES[t] for i, t in enumerate(fields)},
    })
    rows = draw(st.lists(row, min_size=1, max_size=25))
    times = sorted(set(draw(st.lists(st.integers(0, 60), min_size=1, max_size=3))))
    if ttl_min is not None:  # probe the ttl edge exactly: T - ttl equal to an event time
        times = sorted({*times, rows[0]["ts"] + ttl_min})
    return {"keys": keys, "fields": fields, "created": created, "ttl_min": ttl_min,
            "rows": rows, "times": times}


def write_repo(root: Path, sc: dict[str, Any], online_url: str) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    project = f"parity{next(_projects)}"
    (root / "featurestore.yaml").write_text(f"project: {project}\nonline_store: {online_url}\n")
    write_data(root, sc)

    keys = ", ".join(f'"{k}": {t}' for k, t in sc["keys"].items())
    fields = ", ".join(f'Field("f{i}", {t})' for i, t in enumerate(sc["fields"]))
    created = (f', created="cr", created_role="{sc["created"]}"' if sc["created"] else "")
    ttl = f"timedelta(minutes={sc['ttl_min']})" if sc["ttl_min"] is not None else "None"
    (root / "features.py").write_text(textwrap.dedent(f"""
        from datetime import timedelta
        from featurestore import Entity, FeatureService, FeatureView, Field, Source
        from featurestore.types import Bool, Float64, Int64, String, Timestamp
        e = Entity("e", join_keys={{{keys}}})
        src = Source("src", path="data/src.parquet", timestamp="ts"{created})
        v = FeatureView("v", entity=e, source=src, ttl={ttl}, fields=[{fields}])
        svc = FeatureService("svc", features=[v])
        """))


def write_data(root: Path, sc: dict[str, Any]) -> None:
    columns: dict[str, Any] = {k: [r[k] for r in sc["rows"]] for k in sc["keys"]}
    schema: dict[str, Any] = {k: POLARS[t] for k, t in sc["keys"].items()}
    columns["ts"] = [BASE + timedelta(minutes=r["ts"]) for r in sc["rows"]]
    schema["ts"] = POLARS["Timestamp"]
    if sc["created"]:
        columns["cr"] = [BASE + timedelta(minutes=r["ts"] + r["delay"]) for r in sc["rows"]]
        schema["cr"] = POLARS["Timestamp"]
    for i, t in enumerate(sc["fields"]):
        columns[f"f{i}"] = [r[f"f{i}"] for r in sc["rows"]]
        schema[f"f{i}"] = POLARS[t]
    pl.DataFrame(columns, schema=schema).write_parquet(root / "data" / "src.parquet")


def entity_frame(sc: dict[str, Any]) -> pl.DataFrame:
    """Every key seen in the data, plus one never seen."""
    seen = {tuple(r[k] for k in sc["keys"]) for r in sc["rows"]}
    unseen = tuple(99 if t == "Int64" else "never" for t in sc["keys"].values())
    keys = [*sorted(seen, key=repr), unseen]
    return pl.DataFrame({k: [key[i] for key in keys] for i, k in enumerate(sc["keys"])},
                        schema={k: POLARS[t] for k, t in sc["keys"].items()})


def online(store: FeatureStore, client: redis.Redis, service: str, entities: pl.DataFrame,
           requests: pl.DataFrame, as_of: datetime) -> dict[str, tuple[pl.Series, np.ndarray]]:
    """Feature name -> (values, status names) served online as of `as_of`."""
    plan = store.plan
    selection = plan.select(service=service)
    online = online_of(client, plan.project)
    lookup = Lookup(plan.project, plan, selection, online.served())
    cols = {k: from_arrow(entities[k].to_arrow(), t) for k, t in selection.join_keys.items()}
    reqs = {k: from_arrow(requests[k].to_arrow(), t) for k, t in selection.requests.items()}
    result = online.read(lookup, cols, reqs,
                  int((as_of - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)))
    return {f.name: (pl.Series(f.name, to_arrow(f.column, f.dtype)),
                     np.asarray(STATUS_NAMES)[f.status]) for f in result.features}


def assert_same(offline: pl.DataFrame, served: dict[str, tuple[pl.Series, np.ndarray]],
                context: str) -> None:
    for name, (values, statuses) in served.items():
        expected = offline[name]
        assert statuses.tolist() == offline[f"{name}__status"].cast(pl.String).to_list(), \
            f"{context}: statuses of {name}"
        assert values.is_null().to_list() == expected.is_null().to_list(), f"{context}: nulls of {name}"
        if values.dtype == pl.Float64:  # bit patterns, NaN payloads included
            got = values.fill_null(0.0).to_numpy().view(np.int64)
            want = expected.fill_null(0.0).to_numpy().view(np.int64)
            assert got.tolist() == want.tolist(), f"{context}: bits of {name}"
        else:
            assert values.to_list() == expected.to_list(), f"{context}: values of {name}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(sc=scenarios())
def test_online_equals_offline(sc: dict[str, Any], online_url: str,
                               tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("parity")
    write_repo(root, sc, online_url)
    store = FeatureStore(root)
    store.apply()
    client = redis_client(online_url)
    entities = entity_frame(sc)
    for minute in sc["times"]:
        as_of = BASE + timedelta(minutes=minute)
        store.materialize(end=as_of)
        labels = entities.with_columns(event_timestamp=pl.lit(as_of))
        offline = store.training_set(labels, service="svc", statuses=True)
        assert_same(offline, online(store, client, "svc", entities, labels, as_of),
                    f"T=+{minute}min")


@pytest.fixture(scope="module", params=["visibility", "tie_break"])
def served(request: pytest.FixtureRequest, online_url: str,
           tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[FeatureStore, Server, dict[str, Any]]]:
    """One repo of the FIXED schema (with each created role) behind a real `featurestore
    serve`; examples swap its data."""
    schema = {**FIXED, "created": request.param}
    root = tmp_path_factory.mktemp("parity-grpc")
    write_repo(root, {**schema, "rows": [], "times": []}, online_url)
    store = FeatureStore(root)
    store.apply()
    store.materialize(end=BASE)
    server = start_server(root, root / "serve.log")
    yield store, server, schema
    stop_server(server)


# One Redis only: tests/serving/test_cluster_serving.py checks gRPC values against training
# sets on the cluster, and test_online_equals_offline this module's scenarios (suite time).
@pytest.mark.parametrize("online_url", ["redis"], indirect=True)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_served_over_grpc_equals_offline(data: st.DataObject,
                                         served: tuple[FeatureStore, Server, dict[str, Any]],
                                         online_url: str) -> None:
    store, server, schema = served
    sc = data.draw(scenarios(schema))
    write_data(store.config.root, sc)
    store.backfill()
    client = redis_client(online_url)
    for key in client.scan_iter(f"{store.plan.project}:v:*{{e|*}}"):
        client.delete(key)  # rows of the previous example; the versions stay served
    entities = entity_frame(sc)
    with Client(server.target) as grpc_client:
        for minute in sc["times"]:
            as_of = BASE + timedelta(minutes=minute)
            store.materialize(end=as_of)
            labels = entities.with_columns(event_timestamp=pl.lit(as_of))
            offline = store.training_set(labels, service="svc", statuses=True)
            result = grpc_client.get_online_features(
                service="svc", entities={k: entities[k].to_list() for k in sc["keys"]},
                as_of=as_of)
            frame = result.to_polars(statuses=True)
            assert_same(offline, {name: (frame[name], frame[f"{name}__status"].cast(pl.String)
                                         .to_numpy()) for name in result.names},
                        f"over gRPC, T=+{minute}min")
