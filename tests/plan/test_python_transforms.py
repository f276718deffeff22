"""Transforms declared `compiled=False`: plain Python that Numba could not compile (a dict, a
library call, a wrong return type) runs row by row through the one executor, with the
compiled transforms' rules (missing inputs, defaults, raising rows) plus None for NULL, and
gives the same values and statuses in a training set, in an in-process online lookup and as
a SQL function."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from repo_kit import T0, write_repo
from serving_kit import cli

from featurestore import FeatureStore
from featurestore.plan.kernels import Kernel
from featurestore.plan.python_kernel import PythonKernel
from featurestore.ui.catalog import read_catalog
from featurestore.ui.page import render

DEFINITIONS = """
import statistics
from featurestore import Entity, FeatureService, FeatureView, Field, Request, Source, transform
from featurestore.types import Bool, Float64, Int64, String

user = Entity("user", join_keys={"user_id": Int64})
profiles = Source("profiles", path="data/profiles.parquet", timestamp="updated_at")
user_profile = FeatureView("user_profile", entity=user, source=profiles,
    fields=[Field("age", Int64), Field("country", String), Field("credit_limit", Float64)])
NAMES = {"US": "United States", "FR": "France"}

@transform(inputs={"country": user_profile["country"]}, output=String, compiled=False)
def country_name(country):
    return NAMES.get(country)  # a dict: Numba cannot compile it; None is a NULL

@transform(inputs={"amount": Request("amount", Float64), "limit": user_profile["credit_limit"]},
           output=Float64, compiled=False)
def ratio(amount, limit):
    return amount / limit  # ZeroDivisionError for a zero limit

@transform(inputs={"age": user_profile["age"], "name": country_name}, output=Int64,
           defaults={"name": "?"}, compiled=False)
def age_plus_name(age, name):
    return age + len(name)

@transform(inputs={"amount": Request("amount", Float64), "limit": user_profile["credit_limit"]},
           output=Float64, compiled=False)
def spread(amount, limit):
    return statistics.pstdev([amount, limit])

@transform(inputs={"r": ratio}, output=Bool)
def big(r):  # compiled, reading a plain-Python transform
    return r > 1.0

@transform(inputs={"age": user_profile["age"]}, output=Int64, compiled=False)
def half_age(age):
    return age / 2  # a float for an Int64 output: counted as raising

service = FeatureService("profile_py", features=[
    user_profile["country"], country_name, ratio, age_plus_name, spread, big])
"""
FEATURES = ["country_name", "ratio", "age_plus_name", "spread", "big"]
AT = T0 + timedelta(days=3)


def profiles() -> pl.DataFrame:
    return pl.DataFrame({
        "user_id": [1, 1, 2, 3],
        "updated_at": [T0, T0 + timedelta(days=2), T0 + timedelta(days=1), T0],
        "age": [30, 31, 40, 20],
        "country": ["US", "FR", "DE", "US"],
        "credit_limit": [100.0, 200.0, 50.0, 0.0],
    })


LABELS = pl.DataFrame({"user_id": [1, 2, 3, 9, 1], "event_timestamp": [AT] * 5,
                       "amount": [300.0, 25.0, 5.0, 1.0, None]})
EXPECTED = {  # user 9 is never seen; the last row has no amount
    "country_name": ["France", None, "United States", None, "France"],
    "ratio": [1.5, 0.5, None, None, None],
    "age_plus_name": [37, 41, 33, None, 37],  # DE has no name: the default "?"
    "spread": [50.0, 12.5, 2.5, None, None],
    "big": [True, False, None, None, None],
}
STATUSES = {
    "country_name": ["PRESENT", "NULL", "PRESENT", "NULL", "PRESENT"],
    "ratio": ["PRESENT", "PRESENT", "NULL", "NULL", "NULL"],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    root = write_repo(tmp_path_factory.mktemp("python_transforms"), DEFINITIONS,
                      {"profiles": profiles()}, project="python_transforms")
    store = FeatureStore(root)
    store.apply()
    return store


def test_plain_python_runs_row_by_row_with_the_compiled_rules(store: FeatureStore) -> None:
    kernels = {name: store.plan.transforms[name].kernel for name in [*FEATURES, "half_age"]}
    assert isinstance(kernels["big"], Kernel)
    assert all(isinstance(k, PythonKernel) for n, k in kernels.items() if n != "big")
    with pytest.warns(RuntimeWarning, match="transform 'ratio' raised for 1 of 5 rows"):
        frame = store.training_set(LABELS, service="profile_py", statuses=True)
    for name, values in EXPECTED.items():
        assert frame[name].to_list() == values, name
    for name, statuses in STATUSES.items():
        assert frame[f"{name}__status"].cast(pl.String).to_list() == statuses, name
    with pytest.warns(RuntimeWarning, match="transform 'half_age' raised for 4 of 5 rows"):
        wrong = store.training_set(LABELS, features=["half_age"])
    assert wrong["half_age"].to_list() == [None] * 5
    described = cli("describe", "profile_py", "--repo", store.config.root).stdout
    assert "ratio (plain Python, slower), " in described and "big" in described
    assert "big (plain Python" not in described
    page = render(read_catalog(store.config.root))  # the catalog marks the five, not `big`
    assert page.count("runs as plain Python, row by row (slower)") == 5
    # The same function as a SQL function.
    assert store.sql("SELECT country_name('FR') AS a, country_name('DE') AS b").row(0) == (
        "France", None)


def test_online_lookups_equal_the_training_set(store: FeatureStore, redis_url: str,
                                               tmp_path: Path) -> None:
    config = store.config.root / "featurestore.yaml"
    config.write_text(config.read_text() + f"online_store: {redis_url}\n")
    online_store = FeatureStore(store.config.root)
    online_store.materialize(end=AT)
    with pytest.warns(RuntimeWarning):
        offline = online_store.training_set(LABELS, service="profile_py", statuses=True)
    served = online_store.get_online_features(
        service="profile_py", entities={"user_id": LABELS["user_id"].to_list()},
        request={"amount": LABELS["amount"].to_list()}, as_of=AT)
    assert served.transform_errors == {"ratio": 1}
    online = served.to_polars(statuses=True)
    for name in ["country", *FEATURES]:
        for column in (name, f"{name}__status"):
            assert online[column].cast(pl.String).to_list() == \
                offline[column].cast(pl.String).to_list(), column
