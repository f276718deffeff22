"""Feast's HTTP API as a drop-in: the same JSON requests sent to `feast serve` and to
`featurestore serve --http-port` (both over the repo `feast init` creates, converted by
`import-feast`, materialized up to now) get the same JSON back, feature by feature."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from feast_kit import init_and_import
from redis_kit import free_port
from serving_kit import start_server, stop_server, wait_for

from featurestore import FeatureStore

pytest.importorskip("feast", reason="Feast is installed by `make install` (the feast extra)")

DRIVERS = [1001, 1002, 1003, 1004, 1005]


def post(port: int, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/get-online-features", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError):
        return False


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[int, int]]:
    """(feast serve's port, our HTTP port), both serving values materialized up to now."""
    root = tmp_path_factory.mktemp("feast_http")
    feast_repo, converted, _ = init_and_import(root)
    now = datetime.now(UTC).replace(microsecond=0)
    feast = [sys.executable, "-m", "feast.cli.cli"]
    subprocess.run([*feast, "apply"], cwd=feast_repo, check=True, capture_output=True)
    subprocess.run([*feast, "materialize-incremental", now.strftime("%Y-%m-%dT%H:%M:%S")],
                   cwd=feast_repo, check=True, capture_output=True)
    config = converted / "featurestore.yaml"
    config.write_text(config.read_text().replace("managed", redis_url))
    store = FeatureStore(converted)
    store.apply()
    store.materialize(end=now)
    theirs_port, ours_port = free_port(), free_port()
    with (root / "feast.log").open("w") as out:
        theirs = subprocess.Popen([*feast, "serve", "-p", str(theirs_port)], cwd=feast_repo,
                                  stdout=out, stderr=out)
    ours = start_server(converted, root / "serve.log", "--http-port", str(ours_port))
    try:
        wait_for("feast serve", lambda: healthy(theirs_port))
        wait_for("our HTTP endpoint", lambda: healthy(ours_port))
        yield theirs_port, ours_port
    finally:
        theirs.terminate()
        theirs.wait(timeout=30)
        stop_server(ours)


REQUESTS = [
    {"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate",
                  "driver_hourly_stats:avg_daily_trips"],
     "entities": {"driver_id": [*DRIVERS, 1099]}},  # 1099: never seen, NOT_FOUND
    {"features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats_fresh:avg_daily_trips"],
     "entities": {"driver_id": [1003, 1001]}, "full_feature_names": True},
    {"feature_service": "driver_activity_v1",
     "entities": {"driver_id": DRIVERS, "val_to_add": [1, 2, 3, 4, 5],
                  "val_to_add_2": [10, 20, 30, 40, 50]}},
    {"features": ["driver_hourly_stats:conv_rate", "transformed_conv_rate:conv_rate_plus_val2"],
     "entities": {"driver_id": [1002], "val_to_add": [1], "val_to_add_2": [7]}},
    {"features": ["driver_hourly_stats_fresh:conv_rate",
                  "transformed_conv_rate_fresh:conv_rate_plus_val1"],
     "entities": {"driver_id": [1004, 1005], "val_to_add": [3, 4], "val_to_add_2": [0, 0]},
     "full_feature_names": True},  # an output name two on-demand views share
]


@pytest.mark.parametrize("body", REQUESTS, ids=["features", "full_names", "service", "odfv",
                                                "odfv_shared_name"])
def test_same_json_as_feast_serve(ports: tuple[int, int], body: dict[str, Any]) -> None:
    theirs_port, ours_port = ports
    theirs_status, theirs = post(theirs_port, body)
    ours_status, ours = post(ours_port, body)
    assert theirs_status == ours_status == 200, (theirs, ours)
    assert set(ours) == set(theirs) == {"metadata", "results"}
    # Feast orders a view's features by a Python set (its order changes from one Feast
    # process to the next); ours keeps the requested order. By name, the answers are equal.
    names = ours["metadata"]["feature_names"]
    assert names[0] == theirs["metadata"]["feature_names"][0] == "driver_id"
    assert sorted(names) == sorted(theirs["metadata"]["feature_names"])
    assert len(set(names)) == len(names)
    mine = dict(zip(names, ours["results"], strict=True))
    feast = dict(zip(theirs["metadata"]["feature_names"], theirs["results"], strict=True))
    for name in names:
        assert mine[name] == feast[name], name
    assert any(s == "PRESENT" for r in ours["results"][1:] for s in r["statuses"])


def test_errors_are_json_with_a_detail(ports: tuple[int, int]) -> None:
    _, ours_port = ports
    status, answer = post(ours_port, {"feature_service": "nope", "entities": {"driver_id": [1]}})
    assert status == 404 and "unknown feature service 'nope'" in answer["detail"]
    status, answer = post(ours_port, {"features": ["driver_hourly_stats:conv_rate"],
                                      "entities": {"driver": [1]}})
    assert status == 422 and "missing entity key 'driver_id'" in answer["detail"]
    status, answer = post(ours_port, {"features": ["driver_hourly_stats:conv_rate"]})
    assert status == 422 and "entities" in answer["detail"]

