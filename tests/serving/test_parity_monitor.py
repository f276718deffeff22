"""The live parity monitor: a real server with `--log-sample 1` logs every request, and
`featurestore parity --from-log` recomputes them as training sets. It finds no mismatch in a
healthy deployment, counts the values the online store could not know (rows that became
visible after the materialization's END) as not reproducible, and, once one stored value is
corrupted in Redis, reports exactly that feature and the transform reading it."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis
from redis_kit import free_port
from serving_kit import (
    END,
    Example,
    Server,
    cli,
    scrape,
    start_server,
    stop_server,
    wait_for,
)

from featurestore import Client
from featurestore.definitions.types import Float64
from featurestore.online.codec import HEADER_BYTES, RowSchema
from featurestore.online.keys import entity_bases
from featurestore.online.lookup import Lookup
from featurestore.parity import DIFFERENT, EXPIRED, SAME, compare, default_as_of
from featurestore.plan import OutputFeature
from featurestore.serving.proto import pb
from featurestore.serving.request import read_columns
from featurestore.serving.samples import (
    Sampler,
    first_entity_hash,
    read_samples,
    read_summary,
    samples_dir,
)
from featurestore.values.columns import Column
from featurestore.values.strings import Utf8Array
from featurestore.values.timestamps import from_micros, now_us, to_micros

SERVICE = "fraud_v1"
FEATURE_LIST = ["user_spend", "amount_to_limit"]
LIST_NAME = "features:user_spend,amount_to_limit"
PROFILE_DEPENDENTS = {"age", "country", "credit_limit", "is_premium", "account_opened_at",
                      "amount_to_limit", "is_foreign", "account_age_days"}
FAR = datetime(2100, 1, 1, tzinfo=UTC)  # the wall time of a forged sample, after every real one
LATE = "user_profile had rows visible after the end of its materialization (not materialized)"


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sampled(example: Example, metrics_port: int) -> Iterator[Server]:
    running = start_server(example.repo, example.repo.parent / "serve-sampled.log",
                           "--log-sample", "1", "--metrics-port", str(metrics_port))
    yield running
    stop_server(running)


def visible_after(example: Example, view: str, keys: list[str], after: datetime,
                  until: datetime | None = None) -> pl.DataFrame:
    """The keys of a view's feature-table rows that became visible in (after, until]."""
    until_sql = f" AND visible_at <= TIMESTAMPTZ '{until.isoformat()}'" if until else ""
    return example.store.sql(
        f"SELECT DISTINCT {', '.join(keys)} FROM features.{view} "
        f"WHERE visible_at > TIMESTAMPTZ '{after.isoformat()}'{until_sql}")


def requests(example: Example, t: int) -> list[dict[str, Any]]:
    """Batches and single entities of the service (its views, windows and request-time
    transforms) and of a feature list, at T, now, and at T2, after some profiles changed
    offline without being materialized: only T2's batch holds such users."""
    t2 = max(from_micros(t), END + timedelta(days=4))
    pair = ["user_id", "merchant_id"]
    pairs = (pl.read_parquet(example.repo / "data" / "user_merchant_daily.parquet")
             .select(pair).unique().sort(pair)
             .join(visible_after(example, "user_merchant_history", pair, END), on=pair,
                   how="anti"))
    clean = pairs.join(visible_after(example, "user_profile", ["user_id"], END), on="user_id",
                       how="anti")
    late = pairs.join(visible_after(example, "user_profile", ["user_id"], END, t2),
                      on="user_id").head(6)
    batch = pl.concat([clean.head(40), pl.DataFrame({"user_id": [10**9], "merchant_id": ["M0"]})])

    def service(frame: pl.DataFrame, as_of: datetime | int | None) -> dict[str, Any]:
        n = frame.height
        return {"service": SERVICE, "as_of": as_of,
                "entities": {k: frame[k].to_list() for k in pair},
                "request": {
                    "amount": [[50.0 + i, float("nan"), -0.0, float("inf"), None][i % 5]
                               for i in range(n)],
                    "txn_country": [["US", "FR", "日本"][i % 3] for i in range(n)],
                    "txn_ts": [END - timedelta(days=i) for i in range(n)]}}

    def features(users: list[int], as_of: int | None) -> dict[str, Any]:
        return {"features": FEATURE_LIST, "as_of": as_of, "entities": {"user_id": users},
                "request": {"amount": [10.0 + i for i in range(len(users))]}}

    users = batch["user_id"].to_list()
    return [service(batch, t), service(batch, None), service(late, t2),
            *(service(batch[i:i + 1], t) for i in range(3)),
            features(users, t), features(users[:1], t), features(users, None)]


def send(target: str, asks: list[dict[str, Any]]) -> list[Any]:
    with Client(target) as client:
        return [client.get_online_features(**ask) for ask in asks]


def monitor(example: Example, since: int, expect: int, logged: int
            ) -> tuple[str, dict[str, Any]]:
    """`parity --from-log --since`, once the server's writer thread has logged `logged`
    requests."""
    folder = samples_dir(example.repo)
    wait_for("the samples to be written",
             lambda: folder.exists() and len(read_samples(folder, since)[0]) == logged)
    at = from_micros(since).isoformat()
    proc = cli("parity", "--from-log", "--since", at, "--repo", example.repo, expect=expect)
    return proc.stdout, read_summary(samples_dir(example.repo))


def by_feature(summary: dict[str, Any], field: str) -> dict[tuple[str, str], int]:
    return {(f["selection"], f["feature"]): f[field] for f in summary["features"]
            if f[field]}


def test_live_requests_recompute_exactly_until_a_stored_value_is_corrupted(
        example: Example, sampled: Server, online_store: Any, metrics_port: int) -> None:
    t = default_as_of(example.store, SERVICE)
    asks = requests(example, t)
    since = now_us()
    answers = send(sampled.target, asks)
    out, summary = monitor(example, since, 0, len(asks))
    assert "parity holds" in out, out
    assert summary["samples"] == len(asks) and summary["unreadable"] == 0
    assert by_feature(summary, "mismatched") == {}
    checked = by_feature(summary, "checked")
    names = set(answers[0].names)
    assert {f for s, f in checked if s == SERVICE} == names
    assert {f for s, f in checked if s == LIST_NAME} == set(answers[-1].names)
    # T2's batch holds users whose profile changed offline after END: the online store could
    # not know it, so those values are skipped (they would differ), the rest compared.
    late_rows = len(asks[2]["entities"]["user_id"])
    assert late_rows > 0
    assert summary["not_reproducible"] == {LATE: late_rows * len(PROFILE_DEPENDENTS)}
    assert by_feature(summary, "not_reproducible") == {
        (SERVICE, f): late_rows for f in PROFILE_DEPENDENTS}

    # Corrupt one value: one user's credit_limit, re-encoded by the store's own codec.
    user, present = corruptible_user(asks, answers)
    client = redis.Redis.from_url(online_store.url)
    with example.store.online() as online:
        storage = online.served()["user_profile"].storage
    view = example.store.plan.views["user_profile"]
    key = entity_bases(example.store.plan.project, "user_profile", storage, view.entity,
                       [[str(user)]])[0]
    original = client.get(key)
    assert original is not None
    try:
        client.set(key, with_credit_limit(view.features, original, 1e6), keepttl=True)
        since = now_us()
        send(sampled.target, asks)
        out, summary = monitor(example, since, 1, len(asks))
    finally:
        client.set(key, original, keepttl=True)
        client.close()
    assert by_feature(summary, "mismatched") == {
        (SERVICE, "credit_limit"): present[SERVICE, "credit_limit"],
        (SERVICE, "amount_to_limit"): present[SERVICE, "amount_to_limit"],
        (LIST_NAME, "amount_to_limit"): present[LIST_NAME, "amount_to_limit"]}
    assert all(n > 0 for n in present.values())
    assert "mismatches" in out and "credit_limit" in out, out
    # the running server exports the run's counts (it rereads the summary when it changes)
    def exported() -> dict[tuple[str, str], int]:
        return {(dict(labels)["selection"], dict(labels)["feature"]): int(v)
                for (name, labels), v in scrape(metrics_port).items()
                if name == "featurestore_parity_mismatched_values" and v}
    wait_for("the mismatch counts in the metrics",
             lambda: exported() == by_feature(summary, "mismatched"), timeout=10)


def test_windows_served_from_an_earlier_materialization_are_not_compared(
        example: Example, sampled: Server) -> None:
    """A sample whose user_spend was read from a materialization that ended 30 days before its
    as_of: the windowed values of users with source events since then are not reproducible
    (the tiles could not hold them); every other value is compared, and matches."""
    t = default_as_of(example.store, SERVICE)
    ask = requests(example, t)[0]
    since = now_us()
    send(sampled.target, [ask])
    folder = samples_dir(example.repo)
    wait_for("the sample", lambda: len(read_samples(folder, since)[0]) == 1)
    line = next(json.loads(line) for path in folder.glob("samples-*.jsonl")
                for line in path.read_text().splitlines() if json.loads(line)["wall_us"] >= since)
    earlier = t - 30 * 86_400_000_000
    line["views"]["user_spend"][2] = earlier
    line["wall_us"] = to_micros(FAR)
    forged = folder / f"samples-{FAR:%Y%m%d}-0-0.jsonl"
    forged.write_text(json.dumps(line) + "\n")
    try:
        out, summary = monitor(example, to_micros(FAR), 0, 1)
    finally:
        forged.unlink()
    busy = set(example.store.sql(
        "SELECT DISTINCT user_id FROM sources.transactions WHERE __ingested IS NULL "
        f"AND event_ts > make_timestamptz({earlier}) AND event_ts <= make_timestamptz({t})"
    )["user_id"].to_list())
    rows = sum(u in busy for u in ask["entities"]["user_id"])
    assert rows > 0
    windowed = {"amount_sum_7d", "amount_count_1d", "amount_max_1h", "amount_stddev_7d",
                "merchant_id_count_distinct_1d", "amount_share_of_week"}
    assert by_feature(summary, "not_reproducible") == {(SERVICE, f): rows for f in windowed}
    assert summary["not_reproducible"] == {
        "user_spend had rows visible after the end of its materialization (not materialized)":
            rows * len(windowed)}
    assert by_feature(summary, "mismatched") == {} and "parity holds" in out


def corruptible_user(asks: list[dict[str, Any]], answers: list[Any]
                     ) -> tuple[int, dict[tuple[str, str], int]]:
    """A user served with a positive credit_limit at T, and per selection how many of its
    served credit_limit values, and amount_to_limit values with a finite nonzero amount, were
    PRESENT: the values that must mismatch once its stored credit_limit changes."""
    first = answers[0].to_dict(statuses=True)
    user = next(u for u, v, s in zip(asks[0]["entities"]["user_id"], first["credit_limit"],
                                      first["credit_limit__status"], strict=True)
                if s == "PRESENT" and v > 0)
    present: dict[tuple[str, str], int] = {}
    for ask, answer in zip(asks, answers, strict=True):
        values = answer.to_dict(statuses=True)
        for feature in ("credit_limit", "amount_to_limit"):
            if feature in values:
                key = (ask.get("service") or LIST_NAME, feature)
                present[key] = present.get(key, 0) + sum(
                    u == user and s == "PRESENT" and (feature == "credit_limit" or (
                        a is not None and bool(np.isfinite(a)) and a != 0))
                    for u, s, a in zip(ask["entities"]["user_id"], values[f"{feature}__status"],
                                       ask["request"]["amount"], strict=True))
    return user, present


def with_credit_limit(features: tuple[tuple[str, Any], ...], row: bytes, limit: float) -> bytes:
    """The stored row with another credit_limit, written at its place in the row layout
    (24-byte header, validity bitmap, 8 bytes per non-string feature in order)."""
    schema = RowSchema(features)
    i = [name for name, _ in features].index("credit_limit")
    at = HEADER_BYTES + schema.bitmap_bytes + 8 * schema.fixed.index(i)
    return row[:at] + struct.pack("<d", limit) + row[at + 8:]


def test_requests_are_sampled_by_a_stable_hash_of_their_first_entity(example: Example,
                                                                     tmp_path: Path) -> None:
    plan = example.store.plan
    with example.store.online() as online:
        served = online.served()
    selection = plan.select(features=["user_profile"])
    lookup = Lookup(plan.project, plan, selection, served)
    runs = iter(range(100))

    def sampled(rate: float, batches: list[list[int]]) -> list[list[int]]:
        """The batches a real Sampler logs, read back from its files."""
        root = tmp_path / f"run-{next(runs)}"
        sampler = Sampler(rate, root)
        for users in batches:
            request = pb.GetOnlineFeaturesRequest(features=["user_profile"])
            request.entities["user_id"].int64_values.extend(users)
            _, entities, _ = read_columns(request, selection, 100)
            sampler.offer(request, lookup, served, entities, to_micros(END), b"")
        sampler.close()
        if rate == 0:
            assert not samples_dir(root).exists()
        samples, unreadable = read_samples(samples_dir(root))
        assert unreadable == 0
        return [s.columns(selection)["user_id"].to_pylist() for s in samples]

    singles = [[u] for u in range(1, 401)]
    assert sampled(0.0, singles) == []
    assert sampled(1.0, singles) == singles
    half, most = sampled(0.5, singles), sampled(0.8, singles)
    assert 140 < len(half) < 260 and len(half) < len(most)
    assert all(u in most for u in half)  # a higher rate keeps every entity sampled before
    assert sampled(0.5, singles) == half  # the same entities every time
    # A batch is sampled whole, by its first entity.
    inside, outside = half[0][0], next(u for [u] in singles if [u] not in half)
    assert sampled(0.5, [[inside, outside], [outside, inside]]) == [[inside, outside]]
    # The hash is the same in another process, whatever Python's own hash seed.
    def key(u: int) -> dict[str, Column]:
        return {"user_id": Column(np.array([u]), np.ones(1, bool)),
                "merchant_id": Column(Utf8Array.from_list([f"M{u}"]), np.ones(1, bool))}

    here = [first_entity_hash(key(u)) for u in range(20)]
    there = subprocess.run(
        [sys.executable, "-c", "import numpy as np; "
         "from featurestore.serving.samples import first_entity_hash; "
         "from featurestore.values.columns import Column; "
         "from featurestore.values.strings import Utf8Array; "
         "print([first_entity_hash({'user_id': Column(np.array([u]), np.ones(1, bool)), "
         "'merchant_id': Column(Utf8Array.from_list([f'M{u}']), np.ones(1, bool))}) "
         "for u in range(20)])"],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "1"})
    assert there.stdout.strip() == str(here) and len(set(here)) == 20


def test_a_line_cut_short_is_skipped_and_counted(example: Example, tmp_path: Path) -> None:
    folder = samples_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "samples-20250701-1-0.jsonl").write_text('{"wall_us": 1, "serv\n')
    assert read_samples(folder) == ([], 1)


def test_options_are_checked_and_no_samples_is_said(example: Example) -> None:
    proc = cli("serve", "--repo", example.repo, "--log-sample", "1.5", expect=1)
    assert "--log-sample 1.5 is not a fraction between 0 and 1" in proc.stderr, proc.stderr
    proc = cli("parity", "--from-log", "--service", SERVICE, "--repo", example.repo, expect=1)
    assert "do not apply to --from-log" in proc.stderr, proc.stderr
    proc = cli("parity", "--since", "2025-07-01T00:00:00Z", "--repo", example.repo, expect=1)
    assert "--service is required" in proc.stderr, proc.stderr
    proc = cli("parity", "--from-log", "--since", "2999-01-01T00:00:00Z", "--repo",
               example.repo)
    assert "no sampled requests" in proc.stdout and "--log-sample" in proc.stdout, proc.stdout
    assert read_summary(samples_dir(example.repo))["samples"] == 0


def test_the_comparison_is_bit_for_bit() -> None:
    """NaN payloads and -0.0 differ; statuses must agree, except a key Redis reclaimed."""
    nan, other_nan = (struct.unpack("<d", struct.pack("<Q", bits))[0]
                      for bits in (0x7FF8000000000000, 0x7FF8000000000001))
    out = OutputFeature("x", Float64, "x")
    offline = pl.DataFrame({"x": [nan, nan, 0.0, 1.0, None, None],
                            "x__status": ["PRESENT"] * 4 + ["OUTSIDE_TTL", "NULL"]})
    online = pl.DataFrame({"x": [nan, other_nan, -0.0, 1.0, None, None],
                           "x__status": ["PRESENT"] * 4 + ["NOT_FOUND", "NOT_FOUND"]})
    assert compare(out, offline, online).tolist() == [SAME, DIFFERENT, DIFFERENT, SAME, EXPIRED,
                                                      DIFFERENT]
