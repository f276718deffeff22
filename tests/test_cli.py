"""The command line as a newcomer meets it: where it finds the repo, which options it refuses
(before doing anything), the one rule for times, and messages in its own words."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import polars as pl
import pytest
from repo_kit import profiles_frame, write_repo
from serving_kit import cli

from featurestore.cli import _time
from featurestore.errors import FeatureStoreError
from featurestore.serving.client import server_address


def test_version() -> None:
    assert cli("--version").stdout.strip() == f"featurestore {version('featurestore')}"


def test_commands_find_the_repo_they_run_in(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "shop")
    assert "applied" in cli("apply", cwd=root).stdout
    assert "fraud_v1" in cli("list", cwd=root).stdout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = cli("list", cwd=elsewhere, expect=1).stderr
    assert "feature_repo is not a feature repo: featurestore.yaml is missing" in missing
    assert "--repo" in missing
    # an explicit --repo wins over the folder the command runs in
    other = write_repo(tmp_path / "other", project="other")
    assert "applied" in cli("apply", "--repo", other, cwd=root).stdout


@pytest.mark.parametrize("args", [["sql", "SELECT 1", "--format", "xml"],
                                  ["get", "--service", "fraud_v1", "--entity", "user_id=1",
                                   "--format", "yaml", "--target", "127.0.0.1:1"]])
def test_an_unknown_format_is_refused_before_anything_runs(args: list[str],
                                                           tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo")
    error = cli(*args, "--repo", root, expect=1).stderr if args[0] == "sql" else \
        cli(*args, expect=1).stderr
    assert "--format must be one of table, csv, json" in error
    assert "UNAVAILABLE" not in error  # refused before calling any server


@pytest.mark.parametrize("option", [["serve", "--port", "99999"], ["serve", "--port", "0"],
                                    ["serve", "--workers", "0"], ["serve", "--max-batch", "0"],
                                    ["parity", "--sample", "0"], ["health", "--timeout", "0"],
                                    ["health", "--wait", "-1"]])
def test_numbers_out_of_range_are_refused(option: list[str], tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo")
    command, option = option[0], option[1:]
    extra = ["--repo", str(root)] if command != "health" else []
    error = cli(command, *extra, *option, expect=2).stderr
    assert f"Invalid value for '{option[0]}': Input should be" in error


@pytest.mark.parametrize(("target", "address"), [
    ("localhost", "localhost:6566"), ("10.0.0.7:7000", "10.0.0.7:7000"),
    ("[::1]", "[::1]:6566"), ("[::1]:7000", "[::1]:7000"), ("::1", "[::1]:6566"),
    ("unix:/run/fs.sock", "unix:/run/fs.sock"), ("dns:///fs.internal:6566", "dns:///fs.internal:6566")])
def test_a_server_address_without_a_port_gets_the_default_port(target: str, address: str) -> None:
    assert server_address(target) == address


@pytest.mark.parametrize("target", ["localhost:99999", "localhost:0", "localhost:http", ":6566",
                                    "[::1]7000"])
def test_a_bad_server_address_is_refused(target: str) -> None:
    with pytest.raises(FeatureStoreError, match=r"port must be 1-65535|names no host"):
        server_address(target)
    error = cli("health", "--target", target, expect=1).stderr
    assert repr(target) in error


PLUS_2 = timezone(timedelta(hours=2))


@pytest.mark.parametrize(("text", "when"), [
    ("2025-07-01", datetime(2025, 7, 1, tzinfo=UTC)),
    ("2025-07-01Z", datetime(2025, 7, 1, tzinfo=UTC)),
    ("2025-07-01+02:00", datetime(2025, 7, 1, tzinfo=PLUS_2)),
    ("2025-07-01T12:30:00Z", datetime(2025, 7, 1, 12, 30, tzinfo=UTC)),
    ("2025-07-01T12:30:00.000001+02:00", datetime(2025, 7, 1, 12, 30, 0, 1, tzinfo=PLUS_2)),
])
def test_the_one_rule_for_times(text: str, when: datetime) -> None:
    parsed = _time(text, "--as-of")
    assert parsed == when and parsed is not None and parsed.utcoffset() == when.utcoffset()


@pytest.mark.parametrize(("text", "message"), [
    ("2025-07-01T12:30", "has a time of day but no zone; add Z for UTC or an offset: "
                         "2025-07-01T12:30Z or 2025-07-01T12:30+02:00"),
    ("yesterday", "is not a time; write a date (2025-07-01: midnight UTC"),
    ("2025-13-01", "is not a time"),
])
def test_times_without_a_zone_or_not_times_are_refused(text: str, message: str) -> None:
    with pytest.raises(FeatureStoreError, match="--as-of") as refused:
        _time(text, "--as-of")
    assert message in str(refused.value)
    if "no zone" in message:  # what the message suggests is accepted
        assert _time(message.split(": ")[-1].split(" or ")[0], "--as-of") is not None


def test_messages_use_the_command_lines_words(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo")
    cli("apply", "--repo", root)
    labels = tmp_path / "labels.parquet"
    pl.DataFrame({"user_id": [1], "event_timestamp": [datetime(2025, 7, 1)],
                  "amount": [1.0]}).write_parquet(labels)
    out = tmp_path / "out.parquet"
    neither = cli("training-set", labels, "-o", out, "--repo", root, expect=1).stderr
    assert "--service or --features" in neither and "service=" not in neither
    naive = cli("training-set", labels, "-o", out, "--service", "fraud_v1", "--repo", root,
                expect=1).stderr
    assert "--timezone UTC" in naive and "timezone='UTC'" not in naive
    zoned = cli("training-set", labels, "-o", out, "--service", "fraud_v1", "--timezone", "UTC",
                "--repo", root).stdout
    assert "wrote 1 rows" in zoned


def test_a_copied_or_moved_repo_applies_with_its_compiled_kernels(tmp_path: Path) -> None:
    """Compiled transforms refer to the repo's definition modules by name: a name made from
    the repo's path broke every copy that kept .featurestore/ (ModuleNotFoundError)."""
    root = write_repo(tmp_path / "first")
    cli("apply", "--repo", root)
    kernels = sorted(p.name for p in (root / ".featurestore" / "kernels").rglob("*.nb[ic]"))
    assert kernels, "apply compiled no transform into the repo's kernel cache"
    copied = tmp_path / "copy"
    shutil.copytree(root, copied)
    assert "applied" in cli("apply", "--repo", copied).stdout
    moved = tmp_path / "moved"
    copied.rename(moved)
    assert "applied" in cli("apply", "--repo", moved).stdout
    assert (moved / ".featurestore" / "id").read_text() == (root / ".featurestore" / "id").read_text()


def test_training_set_prints_each_features_statuses(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo")
    cli("apply", "--repo", root)
    labels = tmp_path / "labels.parquet"
    pl.DataFrame({"user_id": [1, 2, 10**9, 10**9 + 1],
                  "event_timestamp": [datetime(2025, 7, 1, tzinfo=UTC)] * 4,
                  "amount": [1.0, 2.0, 3.0, 4.0]}).write_parquet(labels)
    plain, with_statuses = tmp_path / "plain.parquet", tmp_path / "statuses.parquet"
    printed = cli("training-set", labels, "-o", plain, "--service", "fraud_v1", "--repo",
                  root).stdout
    cli("training-set", labels, "-o", with_statuses, "--service", "fraud_v1", "--statuses",
        "--repo", root)
    assert not any(c.endswith("__status") for c in pl.read_parquet(plain).columns)
    frame = pl.read_parquet(with_statuses)
    statuses = [c for c in frame.columns if c.endswith("__status")]
    assert statuses
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in printed.splitlines() if line.count("│") == 6}
    for column in statuses:  # the printed counts are the file's
        values = frame[column].cast(pl.String).to_list()
        assert rows[column.removesuffix("__status")] == [
            f"{values.count(s)} ({values.count(s) / len(values):.0%})"
            for s in ("PRESENT", "NULL", "NOT_FOUND", "OUTSIDE_TTL")], column
    assert rows["credit_limit"][2] == "2 (50%)"  # the two unknown users


def test_describe_a_view_and_a_service(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo")
    cli("apply", "--repo", root)
    view = cli("describe", "user_profile", "--repo", root).stdout
    assert "feature view  user_profile" in view and "ttl           10 days" in view
    assert "managed redis-server is not running" in view  # describing starts nothing
    assert not (root / ".featurestore" / "redis" / "redis.sock").exists()
    assert "source        profiles: data/profiles.parquet (event time updated_at)" in view
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in view.splitlines() if line.count("│") == 8}
    data = profiles_frame()  # the feature table holds the source's rows, one per event
    assert lines["credit_limit"] == ["Float64", str(data.height), "0",
                                     str(data["credit_limit"].min()),
                                     str(data["credit_limit"].max()),
                                     str(data["credit_limit"].mean())]
    assert lines["country"][:3] == ["String", str(data.height), "0"]
    service = cli("describe", "fraud_v1", "--repo", root).stdout
    assert "request inputs   amount Float64" in service and "amount_to_limit" in service
    unknown = cli("describe", "user_profil", "--repo", root, expect=1).stderr
    assert "'user_profil' is neither a feature view nor a feature service" in unknown


def test_plan_shows_what_apply_would_change_and_changes_nothing(tmp_path: Path) -> None:
    root = write_repo(tmp_path / "repo")
    cli("apply", "--repo", root)
    assert "no definition changed" in cli("plan", "--repo", root).stdout
    (root / "features.py").write_text(
        (root / "features.py").read_text().replace("days=10", "days=20"))
    for _ in range(2):  # the second plan sees the same change: the first changed nothing
        planned = cli("plan", "--repo", root).stdout
        assert "changed" in planned and "user_profile" in planned
        assert "apply would build feature table user_profile" in planned
    assert "changed, not applied" in cli("list", "--repo", root).stdout


def test_kernels_cached_under_another_repo_name_are_compiled_again(tmp_path: Path) -> None:
    """Caches written before repos were named by .featurestore/id (by their path) refer to
    definition modules that no longer exist by that name: they are compiled again."""
    root = write_repo(tmp_path / "repo")
    cli("apply", "--repo", root)
    (root / ".featurestore" / "id").write_text("renamed00000")
    assert "applied" in cli("apply", "--repo", root).stdout
    assert "fraud_v1" in cli("list", "--repo", root).stdout
