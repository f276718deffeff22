"""End to end: the example repo (feature_repo/) on small generated data, driven through the real
`featurestore` CLI in subprocesses, the way a user runs it.

Training-set values are checked against a point-in-time lookup written out plainly below over
the generated Parquet files, and transforms against their own Python functions, so a wrong
join, tie-break, ttl or null rule in the package makes these tests fail."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "feature_repo"
SMALL_DATA = ["--users", "300", "--merchants", "50", "--transactions", "3000", "--seed", "3",
              "--end", "2025-07-01T00:00:00Z"]  # a fixed end: the same files every run
LABEL_COLUMNS = ["user_id", "merchant_id", "event_timestamp", "amount", "txn_country", "txn_ts",
                 "is_fraud"]

# The example's views as this test reads them: file, keys, event and created timestamps, ttl.
VIEWS: dict[str, tuple[str, list[str], str, str | None, timedelta | None, list[str]]] = {
    "user_profile": ("profiles.parquet", ["user_id"], "updated_at", "ingested_at",
                     timedelta(days=90),
                     ["age", "country", "credit_limit", "is_premium", "account_opened_at"]),
    "merchant_profile": ("merchants.parquet", ["merchant_id"], "updated_at", None,
                         timedelta(days=30), ["category", "avg_ticket", "risk_score", "is_online"]),
    "user_merchant_history": ("user_merchant_daily.parquet", ["user_id", "merchant_id"],
                              "snapshot_ts", "computed_at", None,
                              ["n_prior_txns", "last_txn_at", "chargebacks"]),
}
# The windowed view user_spend over transactions.parquet: feature -> (column, function,
# window, hop), all keyed by user_id with event time event_ts.
HOUR = timedelta(hours=1)
WINDOWED = {
    "amount_sum_7d": ("amount", "sum", timedelta(days=7), HOUR),
    "amount_count_1d": ("amount", "count", timedelta(days=1), HOUR),
    "amount_max_1h": ("amount", "max", HOUR, timedelta(minutes=5)),
    "amount_stddev_7d": ("amount", "stddev", timedelta(days=7), HOUR),
    "merchant_id_count_distinct_1d": ("merchant_id", "count_distinct", timedelta(days=1), HOUR),
}
# transform -> its arguments, in parameter order (label columns or features)
TRANSFORMS = {
    "amount_to_limit": ["amount", "credit_limit"],
    "amount_share_of_week": ["amount", "amount_sum_7d"],
    "amount_vs_merchant_avg": ["amount", "avg_ticket"],
    "is_foreign": ["txn_country", "country"],
    "seconds_since_last_visit": ["txn_ts", "last_txn_at"],
    "account_age_days": ["txn_ts", "account_opened_at"],
    "pair_chargeback_rate": ["chargebacks", "n_prior_txns"],
}
FEATURES = [f for *_, fields in VIEWS.values() for f in fields] + list(WINDOWED) + list(
    TRANSFORMS)
DEFINITIONS = {
    ("entity", "user"), ("entity", "merchant"), ("entity", "user_merchant"),
    ("source", "profiles"), ("source", "transactions"), ("source", "merchants"),
    ("source", "user_merchant_daily"),
    ("feature_view", "user_profile"), ("feature_view", "merchant_profile"),
    ("feature_view", "user_merchant_history"), ("feature_view", "user_spend"),
    *(("transform", name) for name in TRANSFORMS),
    ("feature_service", "fraud_v1"),
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def run(*args: str | Path, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}  # wide tables: names never wrap
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == expect, (
        f"{' '.join(map(str, args))} exited {proc.returncode}, expected {expect}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def featurestore(*args: str | Path, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "featurestore.cli", *args, cwd=cwd, expect=expect)


def plan_rows(stdout: str) -> dict[str, set[tuple[str, str]]]:
    """The plan table `apply` prints: change -> {(kind, name)}."""
    rows: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for change, kind, name in re.findall(
            r"^\W*(added|changed|removed)\W+(\w+)\W+(\w+)\W", stdout, re.MULTILINE):
        rows[change].add((kind, name))
    return rows


def built_tables(stdout: str) -> dict[str, int]:
    return {v: int(n) for v, n in re.findall(r"built feature table (\w+): (\d+) rows", stdout)}


@dataclass(frozen=True)
class Example:
    cwd: Path
    repo: Path
    labels_path: Path
    labels: pl.DataFrame  # shuffled, with duplicated rows
    applied: str  # stdout of the first apply


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Example:
    cwd = tmp_path_factory.mktemp("e2e")
    repo = cwd / "feature_repo"
    repo.mkdir()
    for path in [*EXAMPLE.glob("*.py"), EXAMPLE / "featurestore.yaml"]:
        shutil.copy2(path, repo)
    shutil.copytree(EXAMPLE / "datagen", repo / "datagen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    run(sys.executable, repo / "datagen" / "generate.py", "--out", repo / "data", *SMALL_DATA,
        cwd=cwd)
    run(sys.executable, repo / "datagen" / "labels.py", "--repo", repo, "--out",
        cwd / "labels.parquet", "--n", "1000000", cwd=cwd)
    labels = pl.read_parquet(cwd / "labels.parquet")
    # labels.py writes time order; shuffle and duplicate rows so order and duplicates are tested
    labels = pl.concat([labels, labels.sample(250, seed=1)]).sample(fraction=1.0, shuffle=True,
                                                                    seed=2)
    labels.write_parquet(cwd / "labels_shuffled.parquet")
    applied = featurestore("apply", "--repo", repo, cwd=cwd).stdout
    return Example(cwd, repo, cwd / "labels_shuffled.parquet", labels, applied)


@pytest.fixture(scope="module")
def training(example: Example) -> tuple[Path, pl.DataFrame]:
    out = example.cwd / "training_set.parquet"
    proc = featurestore("training-set", example.labels_path, "-o", out, "--service", "fraud_v1",
                        "--statuses", "--repo", example.repo, cwd=example.cwd)
    frame = pl.read_parquet(out)
    assert f"wrote {example.labels.height} rows x {frame.width} columns" in proc.stdout
    return out, frame


def test_init_then_apply(tmp_path: Path) -> None:
    featurestore("init", "starter", cwd=tmp_path)
    assert (tmp_path / "starter" / "featurestore.yaml").is_file()
    proc = featurestore("apply", "--repo", "starter", cwd=tmp_path)
    assert plan_rows(proc.stdout)["added"] and "applied" in proc.stdout


def test_apply_registers_and_builds_everything(example: Example) -> None:
    rows = plan_rows(example.applied)
    assert rows["added"] == DEFINITIONS, example.applied
    assert not rows["changed"] and not rows["removed"]
    data = example.repo / "data"
    profiles = pl.read_parquet(data / "profiles.parquet")
    orphans = profiles["user_id"].null_count()
    assert orphans == 3
    assert (f"ingested source profiles: {profiles.height} rows, {orphans} rows with null keys "
            "skipped") in example.applied
    assert set(built_tables(example.applied)) == {*VIEWS, "user_spend"}
    assert "ingested source transactions:" in example.applied
    assert example.applied.rstrip().endswith("applied")


def test_apply_again_changes_nothing(example: Example) -> None:
    proc = featurestore("apply", "--repo", example.repo, cwd=example.cwd)
    assert f"no definition changed ({len(DEFINITIONS)} unchanged)" in proc.stdout
    assert "ingested source" not in proc.stdout and not built_tables(proc.stdout)


def test_list_shows_every_definition_applied(example: Example) -> None:
    proc = featurestore("list", "--repo", example.repo, cwd=example.cwd)
    listed = set(re.findall(r"^\W*(\w+)\W+(\w+)\W+[0-9a-f]{12}\W+applied\W", proc.stdout,
                            re.MULTILINE))
    assert listed == DEFINITIONS, proc.stdout
    assert "not applied" not in proc.stdout


def test_backfill_rebuilds_the_same_tables(example: Example) -> None:
    proc = featurestore("backfill", "--repo", example.repo, cwd=example.cwd)
    assert built_tables(proc.stdout) == built_tables(example.applied)


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def same(a: Any, b: Any) -> bool:
    """Equal values, floats compared bit for bit (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return type(a) is type(b) and a == b


def point_in_time(rows: list[dict[str, Any]], t: datetime, event: str, created: str | None,
                  ttl: timedelta | None) -> tuple[str, dict[str, Any] | None, list[str]]:
    """The rule, written out. Visible at t: event <= t and created <= t. The latest event wins,
    then the latest created, then the later row of the file. A winner whose event is older than
    t - ttl is OUTSIDE_TTL. Also names the tie-breaks that decided."""
    visible = [r for r in rows if r[event] <= t and (created is None or r[created] <= t)]
    if not visible:
        return "NOT_FOUND", None, []
    order = [event, created] if created else [event]
    winner = max(visible, key=lambda r: (*(r[c] for c in order), r["file_row"]))
    tied = [c for i, c in enumerate(order, 1)
            if sum(all(r[o] == winner[o] for o in order[:i]) for r in visible) > 1]
    if ttl is not None and winner[event] < t - ttl:
        return "OUTSIDE_TTL", None, tied
    return "PRESENT", winner, tied


def window(rows: list[dict[str, Any]], t: datetime, column: str, function: str,
           length: timedelta, hop: timedelta) -> Any:
    """A windowed aggregate written out: events with event_ts in [floor(t, hop) - length, t]."""
    tail = EPOCH + (t - EPOCH) // hop * hop - length
    values = [r[column] for r in rows if tail <= r["event_ts"] <= t and r[column] is not None]
    if function == "sum":
        return math.fsum(values) if values else 0.0
    if function == "count":
        return len(values)
    if function == "count_distinct":
        return len(set(values))
    if function == "max":
        return max(values) if values else None
    assert function == "stddev"
    if len(values) < 2:
        return None
    mean = sum(Fraction(v) for v in values) / len(values)
    return math.sqrt(float(sum((Fraction(v) - mean) ** 2 for v in values) / (len(values) - 1)))


def load_definitions(repo: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_features_under_test",
                                                  repo / "features.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_rows(example: Example) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per label row: every feature and status by brute force; plus counts of the cases hit."""
    sources = {}
    for view, (file, keys, _, _, _, _) in VIEWS.items():
        frame = pl.read_parquet(example.repo / "data" / file).with_row_index("file_row")
        by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
        for row in frame.to_dicts():
            if all(row[k] is not None for k in keys):
                by_key[tuple(row[k] for k in keys)].append(row)
        sources[view] = by_key
    spend: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in pl.read_parquet(example.repo / "data" / "transactions.parquet").to_dicts():
        if r["user_id"] is not None:
            spend[r["user_id"]].append(r)
    functions = load_definitions(example.repo)
    cases: dict[str, int] = defaultdict(int)
    out = []
    for label in example.labels.to_dicts():
        t = label["event_timestamp"]
        row: dict[str, Any] = {}
        for view, (_, keys, event, created, ttl, fields) in VIEWS.items():
            rows = sources[view].get(tuple(label[k] for k in keys), [])
            status, winner, tied = point_in_time(rows, t, event, created, ttl)
            cases[f"{view}:{status}"] += 1
            for column in tied:
                cases[f"{view}:tie_on_{column}"] += 1
            if created is not None:  # would ignoring the created time pick another row?
                naive = point_in_time(rows, t, event, None, ttl)[1]
                cases[f"{view}:late_row_hidden"] += naive is not winner
            for f in fields:
                value = winner[f] if winner is not None else None
                row[f] = value
                row[f"{f}__status"] = status if value is not None or winner is None else "NULL"
                cases[f"{view}:NULL"] += row[f"{f}__status"] == "NULL"
        for name, (column, function, length, hop) in WINDOWED.items():
            row[name] = window(spend[label["user_id"]], t, column, function, length, hop)
            row[f"{name}__status"] = "NULL" if row[name] is None else "PRESENT"
        cases[f"user_spend:{'one_event' if row['amount_stddev_7d'] is None else 'events'}"] += 1
        for name, params in TRANSFORMS.items():
            args = [row[p] if p in row else label[p] for p in params]
            args = [micros(a) if isinstance(a, datetime) else a for a in args]
            value = None if any(a is None for a in args) else getattr(functions, name)(*args)
            row[name] = value
            row[f"{name}__status"] = "NULL" if value is None else "PRESENT"
        out.append(row)
    return out, cases


def test_training_set_is_point_in_time_correct(example: Example,
                                              training: tuple[Path, pl.DataFrame]) -> None:
    _, frame = training
    assert frame.columns == LABEL_COLUMNS + FEATURES + [f"{f}__status" for f in FEATURES]
    assert frame.select(LABEL_COLUMNS).equals(example.labels), "label rows or order changed"
    expected, cases = expected_rows(example)
    got = frame.drop(LABEL_COLUMNS).with_columns(pl.selectors.enum().cast(pl.String)).to_dicts()
    mismatches = [(i, col, got[i][col], want[col])
                  for i, want in enumerate(expected) for col in want
                  if not same(got[i][col], want[col]) and not (
                      col == "amount_stddev_7d" and want[col] is not None
                      and math.isclose(got[i][col], want[col], rel_tol=1e-14))]
    assert not mismatches, f"{len(mismatches)} mismatches, first ones: {mismatches[:10]}"
    # The data must exercise the rules, or the comparison above proves little.
    for case in ["user_profile:NOT_FOUND", "user_profile:OUTSIDE_TTL", "user_profile:NULL",
                 "user_profile:tie_on_updated_at", "user_profile:tie_on_ingested_at",
                 "user_profile:late_row_hidden", "merchant_profile:OUTSIDE_TTL",
                 "user_merchant_history:NOT_FOUND", "user_merchant_history:late_row_hidden",
                 "user_spend:one_event", "user_spend:events"]:
        assert cases[case] > 0, f"the generated data never hits {case}: {dict(cases)}"


def test_sql_transform_matches_training_set(example: Example,
                                           training: tuple[Path, pl.DataFrame]) -> None:
    """Analysts' SQL reads no files, so it rebuilds the labels from the transactions source
    (the labels are all of its rows) and looks them up with the point-in-time macro."""
    _, frame = training
    proc = featurestore(
        "sql", "--repo", example.repo, "--format", "csv",
        "CREATE TEMP VIEW labels AS SELECT user_id, event_ts AS event_timestamp, amount "
        "FROM sources.transactions; "
        "SELECT user_id, epoch_us(event_timestamp) AS t, amount, "
        "amount_to_limit(amount, credit_limit) AS v FROM features.user_profile_asof('labels')",
        cwd=example.cwd)
    lines = proc.stdout.splitlines()
    assert lines[0] == "user_id,t,amount,v"
    got = {}
    for line in lines[1:]:
        user, t, amount, v = line.split(",")
        key = (int(user) if user else None, int(t), float(amount) if amount else None)
        got[key] = float(v) if v else None
    expected = {(r["user_id"], micros(r["event_timestamp"]), r["amount"]): r["amount_to_limit"]
                for r in frame.iter_rows(named=True)}
    assert got.keys() == expected.keys()
    assert all(same(got[k], v) for k, v in expected.items())
    assert None in got.values() and 0.0 in got.values()


@pytest.mark.parametrize("statement", ["DELETE FROM _fs.registry",
                                       "CREATE TABLE notes AS SELECT 1 AS x"])
def test_sql_refuses_writes(example: Example, statement: str) -> None:
    proc = featurestore("sql", "--repo", example.repo, statement, cwd=example.cwd, expect=1)
    assert "read-only" in proc.stderr


def test_editing_a_transform_body_changes_its_version(example: Example) -> None:
    """Runs last: it leaves the repo applied with the edited definition."""
    features = example.repo / "features.py"
    body = "return amount / avg_ticket if avg_ticket > 0.0 else 0.0"
    source = features.read_text()
    assert source.count(body) == 1
    features.write_text(source.replace(body, body.replace("else 0.0", "else -1.0")))
    proc = featurestore("apply", "--repo", example.repo, cwd=example.cwd)
    rows = plan_rows(proc.stdout)
    assert rows["changed"] == {("transform", "amount_vs_merchant_avg"),
                               ("feature_service", "fraud_v1")}, proc.stdout
    assert not rows["added"] and not rows["removed"]
