"""Versions: content hashes stable across processes, new versions only for what changed, and
an apply that fails leaves the registry as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from repo_kit import PROFILE_DEFS, write_repo

from featurestore import FeatureStore
from featurestore.errors import CompileError, NotAppliedError, SourceDataError

HASHES = """
import json, sys
from featurestore import FeatureStore
plan = FeatureStore(sys.argv[1]).plan
print(json.dumps({f"{k}/{n}": h for (k, n), h in plan.definitions().items()}))
"""


def hashes_in_new_process(root: Path) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", HASHES, str(root)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


def active(root: Path) -> dict[tuple[str, str], str]:
    con = duckdb.connect(str(root / "offline.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT kind, name, version FROM _fs.registry WHERE active").fetchall()
    finally:
        con.close()
    return {(k, n): v for k, n, v in rows}


def test_hashes_are_stable_across_processes_and_paths(tmp_path: Path) -> None:
    first = hashes_in_new_process(write_repo(tmp_path / "a"))
    second = hashes_in_new_process(write_repo(tmp_path / "a"))
    elsewhere = hashes_in_new_process(write_repo(tmp_path / "b" / "deeper"))
    assert first == second == elsewhere
    assert len(first) == 5 and all(len(h) == 64 for h in first.values())


def test_a_change_versions_the_definition_and_its_dependents_only(tmp_path: Path) -> None:
    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    before = active(root)
    (root / "features.py").write_text(PROFILE_DEFS.replace("days=10", "days=11"))
    result = store.apply()
    after = active(root)
    changed = {(e.kind, e.name) for e, _ in result.diff.changed}
    # ttl is part of the view; the transform reads the view; the service lists both.
    assert changed == {("feature_view", "user_profile"), ("transform", "amount_to_limit"),
                       ("feature_service", "fraud_v1")}
    for key in [("entity", "user"), ("source", "profiles")]:
        assert before[key] == after[key]
    for key in changed:
        assert before[key] != after[key]
    # Changing it back restores the earlier versions: versions are content hashes.
    (root / "features.py").write_text(PROFILE_DEFS)
    store.apply()
    assert active(root) == before


def test_editing_only_a_transform_body_changes_only_it_and_the_service(tmp_path: Path) -> None:
    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    (root / "features.py").write_text(PROFILE_DEFS.replace("else 0.0", "else -1.0"))
    diff = store.diff()
    assert {(e.kind, e.name) for e, _ in diff.changed} == {
        ("transform", "amount_to_limit"), ("feature_service", "fraud_v1")}
    assert not diff.added and not diff.removed


def test_failed_apply_keeps_the_previous_registry_and_tables(tmp_path: Path) -> None:
    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    before = active(root)
    # A view that reads a column the data does not have: caught while ingesting.
    (root / "features.py").write_text(PROFILE_DEFS.replace('Field("is_premium", Bool)',
                                                           'Field("is_vip", Bool)'))
    with pytest.raises(SourceDataError, match=r"no column 'is_vip'"):
        store.apply()
    assert active(root) == before
    # A transform Numba rejects: caught before the store is touched.
    (root / "features.py").write_text(PROFILE_DEFS.replace(
        "return amount / limit if limit > 0.0 else 0.0", "return open('f')"))
    with pytest.raises(CompileError, match="Numba cannot compile amount_to_limit"):
        store.apply()
    assert active(root) == before
    # The old definitions still serve training sets once restored, without re-applying.
    (root / "features.py").write_text(PROFILE_DEFS)
    store.reload()
    assert store.diff().empty


def test_training_set_refuses_unapplied_definitions(tmp_path: Path) -> None:
    import polars as pl

    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    (root / "features.py").write_text(PROFILE_DEFS.replace("else 0.0", "else -1.0"))
    store.reload()
    labels = pl.DataFrame({"user_id": [1], "amount": [1.0]}).with_columns(
        event_timestamp=pl.lit("2024-01-05").str.to_datetime(time_zone="UTC"))
    with pytest.raises(NotAppliedError, match=r"transform 'amount_to_limit' is not applied"):
        store.training_set(labels, service="fraud_v1")


def test_session_keeps_results_and_lets_apply_run_inside(tmp_path: Path) -> None:
    import polars as pl

    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    labels = pl.DataFrame({"user_id": [1, 2, 1], "amount": [1.0, 2.0, 3.0]}).with_columns(
        event_timestamp=pl.lit("2024-01-05").str.to_datetime(time_zone="UTC"))
    outside = store.training_set(labels, service="fraud_v1")
    with store.session():
        assert store.training_set(labels, service="fraud_v1").equals(outside)
        (root / "features.py").write_text(PROFILE_DEFS.replace("else 0.0", "else -1.0"))
        store.apply()  # closes the held connection for the write, then holds it again
        assert store.training_set(labels, service="fraud_v1").equals(outside)
