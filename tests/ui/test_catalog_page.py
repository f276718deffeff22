"""`featurestore ui`: the catalog page as a browser shows it (Debian's chromium, headless: the
rendered DOM and a screenshot) and as plain HTTP serves it, for a repo that is applied,
materialized into a real Redis, pushed to and parity-checked, and for one with neither an
offline store nor a reachable Redis."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread
from redis_kit import free_port
from repo_kit import T0, profiles_frame, write_repo

from featurestore import FeatureStore
from featurestore.serving.samples import samples_dir, write_summary
from featurestore.values.timestamps import EPOCH

DEFS = """
from featurestore import (Aggregate, Entity, FeatureService, FeatureView, Field, Request, Source,
                          transform)
from featurestore.types import Bool, Float64, Int64, String

user = Entity("user", join_keys={"user_id": Int64}, description="a cardholder")
profiles = Source("profiles", path="data/profiles.parquet", timestamp="updated_at",
                  description="the customer database's change feed")
tx = Source("tx", path="data/tx.parquet", timestamp="event_ts")
user_profile = FeatureView("user_profile", entity=user, source=profiles, ttl="10d",
    fields=[Field("age", Int64), Field("country", String),
            Field("credit_limit", Float64, description="limit in euros"),
            Field("is_premium", Bool)],
    description="who the cardholder is")
spend = FeatureView("spend", entity=user, source=tx, aggregates=[
    Aggregate("amount", "sum", window="1d", hop="1h", name="amount_sum_1d")])

@transform(inputs={"amount": Request("amount", Float64), "limit": user_profile["credit_limit"]},
           output=Float64)
def amount_to_limit(amount, limit):
    \"\"\"The amount against the card's limit.\"\"\"
    return amount / limit if limit > 0.0 else 0.0

@transform(inputs={"share": amount_to_limit}, output=Bool)
def over_limit(share):
    return share > 1.0

fraud = FeatureService("fraud_v1", features=[user_profile, spend, amount_to_limit, over_limit],
                       description="what the fraud model reads")
"""
END = T0 + timedelta(days=5)
EDGES = {
    ("source:profiles", "view:user_profile"), ("source:tx", "view:spend"),
    ("view:user_profile", "transform:amount_to_limit"),
    ("transform:amount_to_limit", "transform:over_limit"),
    ("view:user_profile", "service:fraud_v1"), ("view:spend", "service:fraud_v1"),
    ("transform:amount_to_limit", "service:fraud_v1"), ("transform:over_limit", "service:fraud_v1"),
}
WINDOW = (1280, 2400)
BAR_BLUE = (0x4A, 0x78, 0xC2)  # the histograms' bar colour in the page's CSS


def tx_frame(rows: list[tuple[int, float, datetime]]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [r[0] for r in rows], "amount": [r[1] for r in rows],
                         "event_ts": [r[2] for r in rows]},
                        schema={"user_id": pl.Int64, "amount": pl.Float64,
                                "event_ts": pl.Datetime("us", "UTC")})


@dataclass
class Ui:
    url: str
    process: subprocess.Popen[str]
    root: Path
    pushed_us: int | None = None  # when the repo's push was ingested


def start_ui(root: Path, env: dict[str, str]) -> Ui:
    process = subprocess.Popen(
        [sys.executable, "-m", "featurestore.cli", "ui", "--repo", str(root), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_COLOR": "1", **env})
    assert process.stdout is not None
    line = process.stdout.readline()  # printed once it listens
    if "http://" not in line:
        process.kill()
        pytest.fail(f"featurestore ui did not start: {line}{process.communicate()[1]}")
    return Ui(line.split(" at ")[1].split()[0], process, root)


def stop_ui(ui: Ui) -> None:
    ui.process.terminate()
    ui.process.communicate(timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Ui]:
    """Applied, materialized at END, pushed to, with a parity summary; Redis reachable."""
    root = write_repo(tmp_path_factory.mktemp("catalog") / "repo", DEFS, project="catalog_ui", data={
        "profiles": profiles_frame(),
        "tx": tx_frame([(1, 10.0, T0 + timedelta(hours=1)), (1, 30.0, T0 + timedelta(hours=2)),
                        (2, 5.0, T0 + timedelta(days=1))])})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEATURESTORE_REDIS_URL", redis_url)
        store = FeatureStore(root)
        store.apply()
        store.materialize(end=END)
        pushed = store.push("tx", tx_frame([(1, 7.0, datetime.now(UTC) - timedelta(minutes=1))]))
    write_summary(samples_dir(root), {
        "run_at_us": 1_700_000_000_000_000, "since_us": None, "samples": 10, "unreadable": 0,
        "not_reproducible": {},
        "features": [{"selection": "fraud_v1", "feature": f, "checked": 10,
                      "mismatched": int(f == "age"), "expired": 0, "not_reproducible": 0}
                     for f in ("age", "country", "credit_limit", "is_premium")]
                    + [{"selection": "features:user_profile:age", "feature": "age", "checked": 3,
                        "mismatched": 3, "expired": 0, "not_reproducible": 0}]})
    ui = start_ui(root, {"FEATURESTORE_REDIS_URL": redis_url})
    ui.pushed_us = pushed.ingested_at_us
    yield ui
    stop_ui(ui)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """Never applied; its Redis is a port nothing listens on."""
    root = write_repo(tmp_path_factory.mktemp("bare") / "repo", DEFS, project="catalog_bare",
                      data={"profiles": profiles_frame(), "tx": tx_frame([])})
    ui = start_ui(root, {"FEATURESTORE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    yield ui
    stop_ui(ui)


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("Debian's chromium is not installed: `make chromium` installs it "
                    "(apt-get install chromium)")
    return found


def browse(url: str, tmp: Path, *args: str) -> str:
    """Runs headless chromium on the page; its stdout (the DOM with --dump-dom)."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", f"--user-data-dir={tmp / 'profile'}", *args, url],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Dom(HTMLParser):
    """What the tests look at in a rendered page: each element's tag and attributes, the bars
    of each feature's histogram, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.bars: dict[str, dict[str, int]] = {}
        self.text: list[str] = []
        self._feature = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag == "tr":
            self._feature = a.get("data-feature", "")
        if tag == "rect" and "bar" in a.get("class", "").split() and self._feature:
            self.bars.setdefault(self._feature, {})[a["data-label"]] = int(a["data-count"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and cls in a.get("class", "").split()]

    def by_id(self, id_: str) -> dict[str, str] | None:
        return next((a for _, a in self.elements if a.get("id") == id_), None)


def parse(html: str) -> Dom:
    dom = Dom()
    dom.feed(html)
    return dom


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def test_the_browser_renders_services_views_histograms_lineage_freshness_and_parity(
        live: Ui, tmp_path: Path) -> None:
    dom = parse(browse(live.url, tmp_path, "--dump-dom"))
    assert dom.by_id("service-fraud_v1") is not None
    assert {a["id"] for a in dom.having("section", "view")} == {"view-user_profile", "view-spend"}
    assert {a["id"] for a in dom.having("section", "transform")} == {
        "transform-amount_to_limit", "transform-over_limit"}
    assert [a["data-feature"] for a in dom.having("tr", "feature")] == [
        "amount_sum_1d", "age", "country", "credit_limit", "is_premium"]  # views by name
    text = " ".join(" ".join(dom.text).split())
    for said in ("who the cardholder is", "limit in euros", "what the fraud model reads",
                 "The amount against the card's limit.", "the customer database's change feed",
                 "a cardholder", "sum of amount over 1 d, advancing every 1 h"):
        assert said in text
    # The feature table of user_profile has a row per (user, visible time): three rows.
    assert dom.bars["is_premium"] == {"true": 2, "false": 1}
    assert dom.bars["country"] == {"DE": 1, "FR": 1, "US": 1}
    assert sum(dom.bars["credit_limit"].values()) == 3
    assert dom.bars["credit_limit"]["50 to 57.5"] == 1  # 20 bins from 50 to 200
    assert dom.bars["credit_limit"]["192.5 to 200"] == 1
    assert dom.bars["age"] == {"30": 1, "31": 1, "32": 0, "33": 0, "34": 0, "35": 0, "36": 0,
                               "37": 0, "38": 0, "39": 0, "40": 1}
    assert sum(dom.bars["amount_sum_1d"].values()) > 0
    assert {(a["data-from"], a["data-to"]) for a in dom.having("path", "edge")} == EDGES
    end_us = int((END - EPOCH).total_seconds()) * 1_000_000
    assert {a["data-view"]: a["data-us"] for a in dom.having("b", "end")} == {
        "spend": str(end_us), "user_profile": str(end_us)}
    assert f"materialized up to {iso(END)}" in text
    assert {a["data-view"]: a["data-us"] for a in dom.having("b", "push")} == {
        "spend": str(live.pushed_us), "user_profile": ""}  # the push reached spend only
    assert "last push none since" in text
    assert "served every view at this version" in text
    assert "1 mismatch in 40 values checked" in text  # fraud_v1's, not the feature list's
    assert "not checked" in text  # amount_sum_1d and the transforms were not in the summary


def test_the_screenshot_is_the_page_at_the_window_size(live: Ui, tmp_path: Path) -> None:
    shot = tmp_path / "catalog.png"
    browse(live.url, tmp_path, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == WINDOW  # IHDR: width, height
    pixels = (imread(shot)[..., :3] * 255).round().astype(int)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # not blank
    blue = (np.abs(pixels - np.array(BAR_BLUE)) <= 2).all(axis=-1).sum()
    assert blue > 500  # the histograms' SVG bars were drawn


def test_without_an_offline_store_or_redis_the_page_says_what_it_cannot_read(
        bare: Ui, tmp_path: Path) -> None:
    dom = parse(browse(bare.url, tmp_path, "--dump-dom"))
    text = " ".join(" ".join(dom.text).split())
    assert "freshness unknown: online store redis://127.0.0.1:" in text
    assert text.count("freshness: unknown") == 2  # each view
    assert "offline store not read: no feature view is applied: run `featurestore apply`" in text
    assert dom.bars == {}
    assert len(dom.having("span", "state")) == len(dom.having("section", "card"))
    assert {a.get("class") for a in dom.having("span", "state")} == {"badge state warn"}
    assert "not checked" in text
    assert {(a["data-from"], a["data-to"]) for a in dom.having("path", "edge")} == EDGES


def test_http_serves_the_page_read_only_on_loopback(live: Ui) -> None:
    assert live.url.startswith("http://127.0.0.1:")
    status, headers, body = get(live.url)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in body and "http://" not in body.replace(
        "http://www.w3.org/2000/svg", "")  # nothing fetched from anywhere
    assert 'id="service-fraud_v1"' in body and 'class="bar"' in body
    status, headers, body = get(live.url, "HEAD")
    assert status == 200 and body == "" and int(headers["Content-Length"]) > 1000
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = get(live.url, method)
        assert (status, headers["Allow"]) == (405, "GET, HEAD")
    assert get(live.url + "materialize")[0] == 404
    assert get(live.url + "?refresh=1")[0] == 200


def test_a_port_in_use_is_refused(live: Ui) -> None:
    port = live.url.rsplit(":", 1)[1].strip("/")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "featurestore.cli", "ui", "--repo",
                           str(live.root), "--port", port], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert time.monotonic() - started < 30
