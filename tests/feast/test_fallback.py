"""Feast on-demand views that do not translate element-wise (pandas method calls, python
loops with branches and helpers) are imported as plain-Python transforms running a copy of
the Feast function one row at a time: their training-set values equal Feast's, a real
`featurestore serve` answers what the training set holds bit for bit, and a function that
raises gives NULLs and an error count, never a failed request."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from serving_kit import start_server, stop_server
from test_import import feast_repo, matches

from featurestore import Client, FeatureStore
from featurestore.feast_fallback import copy_function, reads
from featurestore.plan.python_kernel import PythonKernel

feast = pytest.importorskip("feast", reason="Feast is installed by `make install` "
                                              "(the feast extra); run make install")

# Feast 0.67 runs a function from its registry source with only pd and np defined, so a
# function imports or defines anything else inside itself.
EXTRA = """
import numpy as np

@on_demand_feature_view(sources=[stats, request],
                        schema=[Field(name="conv_clipped", dtype=Float64),
                                Field(name="city_upper", dtype=String),
                                Field(name="log_fare", dtype=Float64),
                                Field(name="fare_plus_conv", dtype=Float64)])
def pandas_methods(inputs: pd.DataFrame) -> pd.DataFrame:
    df = pd.DataFrame()
    df["conv_clipped"] = inputs["conv_rate"].clip(0.2, 0.8)
    df["city_upper"] = inputs["city"].str.upper()
    df["log_fare"] = np.log1p(inputs["fare"])
    df["fare_plus_conv"] = inputs["fare"] + inputs["conv_rate"]  # translates: compiled
    return df

@on_demand_feature_view(sources=[stats], mode="python",
                        schema=[Field(name="capped_trips", dtype=Float64),
                                Field(name="trips_band", dtype=String)])
def python_loop(inputs):
    def band(trips):
        return "busy" if trips > 250 else "quiet"

    out = {"capped_trips": [], "trips_band": []}
    for c, t in zip(inputs["conv_rate"], inputs["trips"]):
        if c > 0.5:
            c = 0.5
        out["capped_trips"].append(c * t)
        out["trips_band"].append(band(t))
    return out

@on_demand_feature_view(sources=[stats], mode="python",
                        schema=[Field(name="per_weekday", dtype=Float64)])
def raising(inputs):
    import math

    out = {"per_weekday": []}
    for t in inputs["trips"]:
        if t >= 0:
            out["per_weekday"].append(math.sqrt(7.0 / (t % 7)))
    return out

# Named as its output: the transform's function gets another Python name.
@on_demand_feature_view(sources=[stats], mode="python",
                        schema=[Field(name="rounded", dtype=Int64)])
def rounded(inputs):
    out = {"rounded": []}
    for c in inputs["conv_rate"]:
        if c < 0.25:
            out["rounded"].append(0)
        else:
            out["rounded"].append(round(c * 10))
    return out

fallback = FeatureService(name="fallback_v1",
                          features=[stats, pandas_methods, python_loop, rounded, per_ride])
raises = FeatureService(name="raising_v1", features=[raising])
"""
FALLBACKS = ["conv_clipped", "city_upper", "log_fare", "capped_trips", "trips_band", "rounded"]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(Feast's repo, the converted repo, the converted definitions file)."""
    root = tmp_path_factory.mktemp("fallback")
    repo = feast_repo(root, textwrap.dedent(EXTRA))
    result = import_with_cli(repo, root / "converted")
    assert "not converted" not in result
    assert ("note: on-demand feature view pandas_methods: conv_clipped, city_upper, log_fare "
            "run its function as plain Python, one row at a time (slower than a compiled "
            "transform), since `inputs['conv_rate'].clip(0.2, 0.8)` is not element-wise") in result
    assert "note: on-demand feature view python_loop: capped_trips, trips_band run" in result
    subprocess.run([sys.executable, "-m", "feast.cli.cli", "apply"], cwd=repo, check=True,
                   capture_output=True)
    return repo, root / "converted", (root / "converted" / "features.py").read_text()


def import_with_cli(repo: Path, out: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "featurestore.cli", "import-feast", str(repo),
                           "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def at_events(repo: Path) -> pd.DataFrame:
    """Labels one second after each event, so that every driver has values (Feast's python
    functions get None otherwise), with fares."""
    events = pd.read_parquet(repo / "data" / "stats.parquet").drop_duplicates(
        ["driver_id", "event_timestamp"])
    return pd.DataFrame({"driver_id": events["driver_id"],
                         "event_timestamp": events["event_timestamp"] + pd.Timedelta("1s"),
                         "fare": np.linspace(1.0, 60.0, len(events))})


def test_the_written_repo_copies_feasts_functions(repos: tuple[Path, Path, str]) -> None:
    _, converted, written = repos
    assert "def pandas_methods(inputs: pd.DataFrame) -> pd.DataFrame:" in written
    assert "@on_demand_feature_view" not in written
    assert {"import pandas as pd", "import numpy as np"} <= set(written.splitlines())
    assert 'return feast_row(python_loop, "python", {"conv_rate": conv_rate, "trips": trips}, ' \
        '"trips_band")' in written
    assert '@transform(inputs={"conv_rate": driver_stats["conv_rate"]},\n' \
        '           output=Int64, compiled=False, name="rounded")\ndef rounded_(conv_rate):' \
        in written
    plan = FeatureStore(converted).plan
    kinds = {name: type(t.kernel) for name, t in plan.transforms.items()}
    assert all(kinds[name] is PythonKernel for name in [*FALLBACKS, "per_weekday"])
    assert kinds["fare_plus_conv"] is not PythonKernel and kinds["fare_per_conv"] \
        is not PythonKernel


HELPERS = """
import math
import numpy as np
from statistics import fmean as mean_of
import re
import helpers_local
from helpers_local import twice

LIMITS = {"low": 0.25, "high": 0.75}

def scale(x):
    return x * LIMITS["high"]

def scaled(inputs):
    import json
    out = {"y": []}
    for x in inputs["x"]:
        out["y"].append(json.dumps(scale(mean_of([x, math.pi])) + float(np.float64(1.0))))
    return out

def writes_inputs(inputs):
    inputs["tmp"] = inputs["x"] * 2
    return {"y": inputs["tmp"] + 1}

def dynamic(inputs):
    return {"y": [twice(v) for v in inputs.values()]}

def local_module(inputs):
    return {"y": [helpers_local.twice(v) for v in inputs["x"]]}

PATTERN = re.compile("[0-9]+")

def unwritable(inputs):
    return {"y": [bool(PATTERN.match(v)) for v in inputs["x"]]}
"""


def test_a_function_is_copied_with_what_it_reads_from_its_module(tmp_path: Path) -> None:
    """Module-level imports, aliases, literals and helper functions come along; what cannot
    be written as source is named."""
    (tmp_path / "helpers_local.py").write_text("def twice(v):\n    return 2 * v\n")
    (tmp_path / "udfs.py").write_text(HELPERS)
    sys.path.insert(0, str(tmp_path))
    try:
        import udfs
    finally:
        sys.path.remove(str(tmp_path))
    copied = copy_function(udfs.scaled, tmp_path)
    assert copied.lines == {"math": "import math", "np": "import numpy as np",
                            "mean_of": "from statistics import fmean as mean_of",
                            "LIMITS": "LIMITS = {'low': 0.25, 'high': 0.75}"}
    assert list(copied.functions) == ["scale", "scaled"]
    namespace: dict[str, object] = {}
    exec("\n".join([*copied.lines.values(), *copied.functions.values()]), namespace)
    assert namespace["scaled"]({"x": [1.0, 2.5]}) == udfs.scaled({"x": [1.0, 2.5]})
    assert reads(udfs.scaled, "inputs") == {"x"} and reads(udfs.dynamic, "inputs") is None
    assert reads(udfs.writes_inputs, "inputs") == {"x"}
    assert list(copy_function(udfs.dynamic, tmp_path).functions) == ["twice", "dynamic"]
    with pytest.raises(ValueError, match=r"local_module\(\) uses helpers_local, a module of "
                                         "the Feast repo"):
        copy_function(udfs.local_module, tmp_path)
    with pytest.raises(ValueError, match=r"unwritable\(\) uses PATTERN \(Pattern\), which is "
                                         "neither a literal, an import nor a function of the "
                                         "Feast repo"):
        copy_function(udfs.unwritable, tmp_path)


def test_training_set_equals_feasts(repos: tuple[Path, Path, str]) -> None:
    repo, converted, _ = repos
    store = FeatureStore(converted)
    store.apply()
    theirs = feast.FeatureStore(repo_path=str(repo))
    labels = at_events(repo)
    ours = store.training_set(labels, service="fallback_v1").to_pandas()
    feast_rows = theirs.get_historical_features(
        entity_df=labels, features=theirs.get_feature_service("fallback_v1")).to_df()
    assert len(feast_rows) == len(ours)
    matches(ours, feast_rows, [*FALLBACKS, "fare_plus_conv", "fare_per_conv", "conv_rate"])
    assert ours["city_upper"].isin(["OSLO", "LIMA", "PUNE"]).all()
    assert ours["trips_band"].nunique() == 2 and ours["conv_clipped"].max() == 0.8


def test_served_values_equal_the_training_set(repos: tuple[Path, Path, str], redis_url: str,
                                              tmp_path: Path) -> None:
    repo, converted, _ = repos
    config = converted / "featurestore.yaml"
    config.write_text(config.read_text().replace("managed", redis_url))
    store = FeatureStore(converted)
    store.apply()
    events = pd.read_parquet(repo / "data" / "stats.parquet")
    end = events["event_timestamp"].max().to_pydatetime() + timedelta(seconds=1)
    store.materialize(end=end)
    drivers = list(range(1, 32))  # 30 and 31 never seen; 25-29 outside the ttl
    fares = [math.nan, -0.0, 5e-324, *np.linspace(0.5, 90.0, len(drivers) - 3)]
    labels = pl.DataFrame({"driver_id": drivers, "event_timestamp": [end] * len(drivers),
                           "fare": fares})
    with pytest.warns(RuntimeWarning, match="transform 'per_weekday' raised for") as warned:
        store.training_set(labels, features=["per_weekday"])
    raised = int(re.search(r"raised for (\d+) of", str(warned[0].message)).group(1))
    offline = store.training_set(labels, service="fallback_v1", statuses=True)
    arguments = dict(entities={"driver_id": drivers}, request={"fare": fares}, as_of=end)
    server = start_server(converted, tmp_path / "serve.log")
    try:
        with Client(server.target) as client:
            remote = client.get_online_features(service="fallback_v1", **arguments)
            errors = client.get_online_features(service="raising_v1", as_of=end,
                                                entities=arguments["entities"])
            after = client.get_online_features(service="fallback_v1", **arguments)
    finally:
        stop_server(server)
    local = store.get_online_features(service="fallback_v1", **arguments)
    assert repr(local.to_dict(statuses=True)) == repr(remote.to_dict(statuses=True))
    assert repr(after.to_dict(statuses=True)) == repr(remote.to_dict(statuses=True))
    online = remote.to_polars(statuses=True)
    for name in [*FALLBACKS, "fare_plus_conv", "fare_per_conv", "conv_rate"]:
        status = f"{name}__status"
        assert online[status].cast(pl.String).to_list() == \
            offline[status].cast(pl.String).to_list(), status
        got, want = online[name], offline[name]
        if got.dtype == pl.Float64:  # bit patterns
            assert got.fill_null(0.0).to_numpy().view(np.int64).tolist() == \
                want.fill_null(0.0).to_numpy().view(np.int64).tolist(), name
        else:
            assert got.to_list() == want.to_list(), name
    assert online["city_upper__status"].cast(pl.String).to_list().count("PRESENT") >= 20
    # The raising function: per-row NULLs and a count, the same as offline.
    assert errors.transform_errors == {"per_weekday": raised} and raised > 0
