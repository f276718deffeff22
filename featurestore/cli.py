"""The `featurestore` command. Exit status: 0 success, 1 a problem the message explains
(bad definitions, data or arguments to featurestore), 2 a usage error."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import polars as pl
import typer
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import FeatureStoreError
from featurestore.feast_import import import_feast
from featurestore.feature_store import FeatureStore
from featurestore.materialization import Materialized
from featurestore.offline.event_log import content_id, read_events_table
from featurestore.offline.registry import PlanDiff
from featurestore.offline.sql import SqlSession
from featurestore.online.managed import ManagedRedis
from featurestore.parity import LogReport, ParityReport, check_samples
from featurestore.parity import check as check_parity
from featurestore.repo import CONFIG_FILE, ENGINES, load_config
from featurestore.scaffold import scaffold
from featurestore.serving.client import Client, OnlineFeatures
from featurestore.serving.logs import FORMATS, LEVELS
from featurestore.serving.samples import SUMMARY, check_rate, samples_dir
from featurestore.serving.security import TlsFiles, Tokens, new_token, token_hash
from featurestore.serving.service import ServerOptions
from featurestore.serving.workers import run as run_server
from featurestore.values.status import STATUS_NAMES, Status
from featurestore.values.timestamps import EPOCH, to_micros

app = typer.Typer(help="Features defined once in Python, identical in training and serving.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _version(show: bool) -> None:
    if show:
        print(f"featurestore {package_version('featurestore')}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="print the version and exit")]
        = False) -> None:
    """Features defined once in Python, identical in training and serving."""
# Piped output keeps whole names instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)



def _default_repo(ctx: typer.Context, param: typer.CallbackParam, value: Path) -> Path:
    """Without --repo: the current folder when it is a feature repo, else ./feature_repo."""
    source = ctx.get_parameter_source(param.name or "repo")
    if source is not None and source.name == "DEFAULT" and (Path.cwd() / CONFIG_FILE).is_file():
        return Path(".")
    return value


Repo = Annotated[Path, typer.Option(
    "--repo", callback=_default_repo,
    help="feature repo directory [default: the current folder when it holds featurestore.yaml, "
         "else feature_repo]", show_default=False)]
T = TypeVar("T")
Engine = Annotated[str | None, typer.Option(
    help="offline engine: duckdb or spark [default: offline_engine in featurestore.yaml]",
    show_default=False)]
# How commands that talk to a server reach it; the token itself never goes on a command line.
Tls = Annotated[bool, typer.Option("--tls", help="use TLS, trusting the system's CAs (or "
                                                 "--tls-ca)", envvar="FEATURESTORE_TLS")]
TlsCa = Annotated[Path | None, typer.Option("--tls-ca", help="CA certificate to trust (implies "
                                                             "--tls)",
                                            envvar="FEATURESTORE_TLS_CA")]
TlsCert = Annotated[Path | None, typer.Option("--tls-cert", help="client certificate, for "
                                                                 "mutual TLS",
                                              envvar="FEATURESTORE_TLS_CERT")]
TlsKey = Annotated[Path | None, typer.Option("--tls-key", help="client key, for mutual TLS",
                                             envvar="FEATURESTORE_TLS_KEY")]
TokenFile = Annotated[Path | None, typer.Option(
    "--token-file", help="file holding the bearer token (else FEATURESTORE_TOKEN or "
                         "FEATURESTORE_TOKEN_FILE)")]


def _client(target: str, tls: bool, tls_ca: Path | None, tls_cert: Path | None,
            tls_key: Path | None, token_file: Path | None, timeout: float | None = 5.0) -> Client:
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise FeatureStoreError(f"--token-file {token_file}: cannot read it "
                                    f"({exc.strerror})") from exc
    return Client(target, timeout, token=token, tls=tls, ca_cert=tls_ca, client_cert=tls_cert,
                  client_key=tls_key)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except FeatureStoreError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {_cli_terms(message)}", highlight=False,
              soft_wrap=True)  # one line
    raise typer.Exit(1)


_LISTS = {"int64_values": "whole numbers", "float64_values": "numbers",
          "bool_values": "true or false", "string_values": "text",
          "timestamp_values": "times"}
_API_WORDS = [
    (re.compile(r"service= or features="), "--service or --features"),
    (re.compile(r"pass timezone='UTC'"), "pass --timezone UTC"),
    (re.compile(r"the request sends (\w+); send (\w+)"),
     lambda m: f"it was given {_LISTS.get(m[1], m[1])}; give {_LISTS.get(m[2], m[2])}"),
]


def _cli_terms(message: str) -> str:
    """A library or server message in the words of the command line (its options, not the
    Python API's arguments or the wire's field names)."""
    for pattern, words in _API_WORDS:
        message = pattern.sub(words, message)
    return message


def _store(repo: Path) -> FeatureStore:
    return _guard(lambda: FeatureStore(repo, progress=sys.stderr.isatty()))


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="where to create the repo")] = Path(
        "feature_repo")) -> None:
    """Create a small working feature repo (definitions, config and sample data)."""
    _guard(lambda: scaffold(directory))
    out.print(f"created feature repo in {directory}; next: featurestore apply --repo {directory}")


def _print_diff(diff: PlanDiff) -> None:
    table = Table("change", "kind", "name", "version", title="plan")
    for e in diff.added:
        table.add_row("[green]added[/]", e.kind, e.name, e.version)
    for e, old in diff.changed:
        table.add_row("[yellow]changed[/]", e.kind, e.name, f"{old} -> {e.version}")
    for e in diff.removed:
        table.add_row("[red]removed[/]", e.kind, e.name, e.version)
    if diff.empty:
        out.print(f"no definition changed ({len(diff.unchanged)} unchanged)")
    else:
        out.print(table)


@app.command()
def apply(repo: Repo = Path("feature_repo")) -> None:
    """Validate and compile the definitions, register them, and build their feature tables."""
    store = _store(repo)
    result = _guard(store.apply)
    _print_diff(result.diff)
    for name, done in result.ingested.items():
        skipped = f", {done.skipped_null_keys} rows with null keys skipped" \
            if done.skipped_null_keys else ""
        out.print(f"ingested source {name}: {done.rows} rows{skipped}")
    for name, rows in result.built.items():
        out.print(f"built feature table {name}: {rows} rows")
    out.print("[green]applied[/]")


@app.command("list")
def list_(repo: Repo = Path("feature_repo")) -> None:
    """List the repo's definitions with their versions and whether they are applied."""
    store = _store(repo)
    plan = _guard(lambda: store.plan)
    diff = _guard(store.diff)
    state = {(e.kind, e.name): "applied" for e in diff.unchanged}
    state |= {(e.kind, e.name): "not applied" for e in diff.added}
    state |= {(e.kind, e.name): "changed, not applied" for e, _ in diff.changed}
    table = Table("kind", "name", "version", "state", "details")
    for (kind, name), digest in sorted(plan.definitions().items()):
        table.add_row(kind, name, digest[:12], state.get((kind, name), ""), _details(plan, kind,
                                                                                       name))
    out.print(table)


@app.command("plan")
def plan_(repo: Repo = Path("feature_repo")) -> None:
    """What `apply` would change (definitions added, changed, removed), changing nothing."""
    store = _store(repo)
    diff = _guard(store.diff)
    _print_diff(diff)
    plan = _guard(lambda: store.plan)
    touched = [e for e in [*diff.added, *(e for e, _ in diff.changed)]
               if e.kind in ("source", "feature_view")]
    for e in touched:
        work = ("ingest source" if e.kind == "source" else
                "backfill windows of" if plan.views[e.name].windowed else "build feature table")
        out.print(f"apply would {work} {e.name} (version {e.version})", highlight=False)
    if touched or diff.removed:
        out.print("nothing was changed; run `featurestore apply` to apply this plan")


@app.command()
def describe(name: Annotated[str, typer.Argument(help="a feature view or a feature service")],
             repo: Repo = Path("feature_repo")) -> None:
    """A view's or a service's schema, version, source, ttl, what the online store serves,
    and a summary of the view's values offline."""
    store = _store(repo)
    plan = _guard(lambda: store.plan)
    if name in plan.services:
        selection = plan.select(service=name)
        rows = {"feature service": name, "version": plan.services[name].hash[:12],
                "entity keys": _fields(selection.join_keys.items()),
                "request inputs": _fields(selection.requests.items()) or "-",
                "feature views": ", ".join(selection.views),
                "transforms": ", ".join(t.name + _slower(t) for t in selection.transforms)
                              or "-"}
        _print_rows(rows)
        table = Table("feature", "type", "from")
        for o in selection.outputs:
            table.add_row(o.name, str(o.dtype), o.ref.split(":")[0] if ":" in o.ref
                          else "transform" + _slower(plan.transforms[o.ref]))
        out.print(table)
        return
    if name not in plan.views:
        _fail(f"{name!r} is neither a feature view nor a feature service of this repo; "
              "`featurestore list` lists them")
    view = plan.views[name]
    source = plan.sources[view.source]
    _print_rows({
        "feature view": name + (" (windowed)" if view.windowed else ""),
        "version": view.version, "entity": f"{view.entity} ({_fields(view.join_keys)})",
        "source": f"{source.name}: {source.path or source.table} (event time {source.timestamp}"
                  + (f", created {source.created}" if source.created else "") + ")",
        "ttl": str(timedelta(microseconds=view.ttl_us)) if view.ttl_us else "none",
        "online": _online_state(store, view) if view.online else "offline only"})
    table = Table("feature", "type", "rows", "nulls", "min", "max", "mean", title="offline values")
    summary = {} if view.windowed else _guard(lambda: _value_summary(store, name, view.features))
    for feature, dtype in view.features:
        table.add_row(feature, str(dtype), *summary.get(feature, ["-"] * 5))
    out.print(table)
    if view.windowed:
        out.print("windowed values depend on the time they are read at: see a training set "
                  f"or SELECT ... FROM features.{name}_asof('labels')", highlight=False)


def _slower(t: Any) -> str:
    """What marks a transform run as plain Python (`compiled=False`) rather than compiled."""
    return "" if t.compiled else " (plain Python, slower)"


def _fields(items: Any) -> str:
    return ", ".join(f"{k} {t}" for k, t in items)


def _print_rows(rows: dict[str, str]) -> None:
    width = max(map(len, rows))
    for key, value in rows.items():
        out.print(f"{key:<{width}}  {value}", highlight=False, markup=False, soft_wrap=True)


def _online_state(store: FeatureStore, view: Any) -> str:
    """What the online store serves of `view`; it never starts the managed redis-server."""
    if store.config.online_url == "managed" and not ManagedRedis(store.config.root).running():
        return "unknown (the repo's managed redis-server is not running: `featurestore " \
               "redis start`)"
    try:
        with store.online() as online:
            served = online.served().get(view.name)
    except FeatureStoreError as exc:
        return f"unknown (the online store cannot be read: {exc})"
    if served is None:
        return "not materialized"
    end = _iso(served.end_us, "?")
    if served.view.version != view.version:
        return f"serves version {served.view.version} (materialized up to {end}); this version " \
               "is not materialized"
    return f"served, materialized up to {end}"


def _value_summary(store: FeatureStore, name: str, features: Any) -> dict[str, list[str]]:
    """Per feature of a view's feature table: rows, nulls, and min, max, mean where defined."""
    columns = []
    for feature, dtype in features:
        q = f'"{feature}"'
        columns += ["count(*)", f"count(*) - count({q})"]
        if dtype in (Int64, Float64, Timestamp):
            columns += [f"min({q})::VARCHAR", f"max({q})::VARCHAR",
                        f"avg({q})::VARCHAR" if dtype is not Timestamp else "NULL"]
        else:
            columns += ["NULL", "NULL", "NULL"]
    row = store.sql(f"SELECT {', '.join(columns)} FROM features.\"{name}\"").row(0)
    return {feature: [str(v) if v is not None else "-" for v in row[5 * i:5 * i + 5]]
            for i, (feature, _) in enumerate(features)}


def _details(plan: Any, kind: str, name: str) -> str:
    if kind == "feature_view":
        v = plan.views[name]
        return ", ".join(f"{f}: {t}" for f, t in v.features)
    if kind == "transform":
        t = plan.transforms[name]
        return f"({', '.join(i.ref for i in t.inputs)}) -> {t.output}{_slower(t)}"
    if kind == "feature_service":
        return ", ".join(plan.services[name].features)
    if kind == "entity":
        return ", ".join(f"{k}: {t}" for k, t in plan.entities[name].join_keys)
    src = plan.sources[name]
    return src.path or src.table or ""


@app.command()
def backfill(repo: Repo = Path("feature_repo"),
             view: Annotated[list[str] | None, typer.Option(help="only these views")] = None,
             engine: Engine = None) -> None:
    """Re-read source data and rebuild feature tables."""
    _check_engine(engine)
    store = _store(repo)
    result = _guard(lambda: store.backfill(view or None, engine=engine))
    for name, rows in result.built.items():
        out.print(f"built feature table {name}: {rows} rows")


@app.command("compact-log")
def compact_log(repo: Repo = Path("feature_repo"),
                older_than: Annotated[str, typer.Option(
                    help="merge batches ingested longer ago than this (90s, 5m, 1h, 7d)")] = "1d",
                source: Annotated[list[str] | None, typer.Option(
                    help="only this source (repeatable)")] = None) -> None:
    """Merge the pushed-event log's old batch files into one file per source."""
    store = _store(repo)
    merged = _guard(lambda: store.compact_log(older_than, source or None))
    for name, count in merged.items():
        out.print(f"{name}: {count} batches merged")


@app.command("training-set")
def training_set(
    labels: Annotated[Path, typer.Argument(help="labels file (.parquet or .csv)")],
    output: Annotated[Path, typer.Option("-o", "--output", help=".parquet or .csv")],
    service: Annotated[str | None, typer.Option(help="feature service")] = None,
    features: Annotated[str | None, typer.Option(help="comma-separated: view:feature, view "
                                                      "or transform")] = None,
    timestamp: Annotated[str, typer.Option(help="as-of column of the labels")] = "event_timestamp",
    timezone: Annotated[str | None, typer.Option(help="zone of naive label timestamps")] = None,
    statuses: Annotated[bool, typer.Option(help="add <feature>__status columns")] = False,
    repo: Repo = Path("feature_repo"),
    engine: Engine = None,
) -> None:
    """Build a point-in-time-correct training set for the labels."""
    _check_engine(engine)
    store = _store(repo)

    def run() -> pl.DataFrame:
        table: Any = labels
        if labels.suffix == ".csv":
            table = pl.read_csv(labels, try_parse_dates=True)
        if output.suffix not in (".csv", ".parquet", ".pq"):
            raise FeatureStoreError(f"output {output} must end in .parquet or .csv")
        frame = store.training_set(table, service=service,
                                   features=features.split(",") if features else None,
                                   timestamp=timestamp, timezone=timezone, statuses=True,
                                   engine=engine)
        written = frame if statuses else frame.select(
            c for c in frame.columns if not c.endswith("__status"))
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix == ".csv":
            written.write_csv(output)
        else:
            written.write_parquet(output)
        return frame

    frame = _guard(run)
    written = frame.width if statuses else sum(not c.endswith("__status") for c in frame.columns)
    out.print(f"wrote {frame.height} rows x {written} columns to {output}")
    _print_status_summary(frame)


def _print_status_summary(frame: pl.DataFrame) -> None:
    """Per feature, how many rows got each status: an all-NULL or all-NOT_FOUND feature (a
    wrong key, a ttl too short, labels older than the data) shows here, not in a model."""
    table = Table("feature", *STATUS_NAMES, title="statuses")
    for column in (c for c in frame.columns if c.endswith("__status")):
        counts = frame[column].cast(pl.String).value_counts()
        found = dict(zip(counts[column].to_list(), counts["count"].to_list(), strict=True))
        share = [found.get(s, 0) / max(frame.height, 1) for s in STATUS_NAMES]
        table.add_row(column.removesuffix("__status"), *(
            f"{found.get(s, 0)} ({p:.0%})" if s == "PRESENT" or not found.get(s) else
            f"[yellow]{found.get(s, 0)} ({p:.0%})[/]" for s, p in zip(STATUS_NAMES, share,
                                                                     strict=True)))
    out.print(table)


@app.command()
def sql(query: Annotated[str | None, typer.Argument(help="SQL; omit for an interactive shell")]
        = None, repo: Repo = Path("feature_repo"),
        fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table") -> None:
    """Read-only SQL over the offline store's objects (sources.*, features.*, transforms as
    functions); files, other databases, settings and extensions are out of reach. SHOW TABLES
    lists what there is."""
    _guard(lambda: _check_choice(fmt, FRAME_FORMATS, "--format"))
    store = _store(repo)
    if query is not None:
        _print_sql(_guard(lambda: store.sql(query)), fmt)
        return
    with _guard(store.sql_session) as session:
        _shell(session, fmt)


SHELL_HELP = """\
End SQL statements with ';' (they may span lines); temporary views, tables and macros last
until you quit. Commands (one line, no ';' needed):
  .tables           what you can query: sources, feature views, point-in-time lookups
                    (features.<view>_asof('labels')), transform functions, your temporary
                    objects (also: SHOW TABLES;)
  .describe NAME    columns of a table or view, or parameters and result of a lookup or
                    transform (also for tables and views: DESCRIBE NAME;)
  .help, help       this text
  .quit             leave (or Ctrl-D)"""


def _shell(session: SqlSession, fmt: str) -> None:
    """The interactive prompt: SQL ending in ';', and the dot commands of SHELL_HELP."""
    out.print("featurestore sql (read-only). End statements with ';', .help for help, quit with "
              "Ctrl-D.", highlight=False)
    buffer = ""
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except EOFError:
            out.print()
            return
        command = line.strip().removesuffix(";").split()
        if not buffer and command and (command[0].startswith(".") or command[0] == "help"):
            if command[0] in (".quit", ".exit"):
                return
            _meta(session, command, fmt)
            continue
        buffer += line + "\n"
        if buffer.strip().endswith(";"):
            statement, buffer = buffer, ""
            try:
                _print_sql(session.sql(statement), fmt)
            except FeatureStoreError as exc:
                err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)


def _meta(session: SqlSession, command: list[str], fmt: str) -> None:
    name, args = command[0], command[1:]
    try:
        if name in ("help", ".help"):
            out.print(SHELL_HELP, highlight=False, markup=False)
        elif name == ".tables" and not args:
            _print_sql(session.tables(), fmt)
        elif name == ".describe" and len(args) == 1:
            _print_sql(session.describe(args[0]), fmt)
        elif name in (".tables", ".describe"):
            raise FeatureStoreError(f"usage: {'.tables' if name == '.tables' else '.describe NAME'}")
        else:
            raise FeatureStoreError(f"unknown command {name}; .help lists the commands")
    except FeatureStoreError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)


def _print_sql(frame: pl.DataFrame, fmt: str) -> None:
    with pl.Config(fmt_str_lengths=120):  # whole names and signatures
        _print_frame(frame, fmt)


_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(Z|[+-]\d{2}:\d{2})?")
TIME_RULE = ("a date (2025-07-01: midnight UTC; 2025-07-01+02:00: midnight at that offset) or a "
             "time with its zone (2025-07-01T12:30:00Z, 2025-07-01T12:30:00+02:00)")


def _time(text: str | None, option: str) -> datetime | None:
    """The CLI's one rule for times (TIME_RULE): a date alone is its midnight, in UTC unless
    it carries an offset; a time of day needs its zone (featurestore never guesses one)."""
    if text is None:
        return None
    date = _DATE.fullmatch(text.strip())
    try:
        when = datetime.fromisoformat(f"{date[1]}T00:00:00{date[2] or 'Z'}" if date else text)
    except ValueError:
        raise FeatureStoreError(f"{option} {text!r} is not a time; write {TIME_RULE}") from None
    if when.tzinfo is None:
        raise FeatureStoreError(f"{option} {text!r} has a time of day but no zone; add Z for "
                                f"UTC or an offset: {text}Z or {text}+02:00")
    return when


End = Annotated[str | None, typer.Option(help="a date (midnight UTC) or a time with its zone, "
                                              "e.g. 2025-07-01T00:00:00Z; default now")]
Views = Annotated[list[str] | None, typer.Option("--view", help="only this view (repeatable)")]


@app.command()
def materialize(repo: Repo = Path("feature_repo"), end: End = None,
                start: Annotated[str | None, typer.Option(
                    help="only entities whose value became visible after this ISO time")] = None,
                view: Views = None, engine: Engine = None) -> None:
    """Write online views' latest values as of --end to the online store (Redis)."""
    _check_engine(engine)
    store = _store(repo)
    until, since = _guard(lambda: (_time(end, "--end"), _time(start, "--start")))
    _start_managed(store, repo)
    _print_materialized(_guard(lambda: store.materialize(end=until, start=since,
                                                         views=view or None, engine=engine)))


@app.command("materialize-incremental")
def materialize_incremental(repo: Repo = Path("feature_repo"), end: End = None,
                            view: Views = None, engine: Engine = None) -> None:
    """Materialize what became visible since each view's last materialization ended."""
    _check_engine(engine)
    store = _store(repo)
    until = _guard(lambda: _time(end, "--end"))
    _start_managed(store, repo)
    _print_materialized(_guard(lambda: store.materialize(end=until, views=view or None,
                                                         incremental=True, engine=engine)))


def _start_managed(store: FeatureStore, repo: Path) -> None:
    """Starts the repo's managed redis-server for a command that writes online, and says so:
    it keeps running after the command (also when the command fails)."""
    if store.config.online_url != "managed":
        return
    managed = ManagedRedis(store.config.root)
    if _guard(managed.start):
        err.print(f"started the repo's managed redis-server (pid {managed.pid()}, socket "
                  f"{managed.socket}); it keeps running: stop it with `featurestore redis stop "
                  f"--repo {repo}`", highlight=False, markup=False, soft_wrap=True)


def _print_materialized(done: list[Materialized]) -> None:
    table = Table("view", "version", "from", "to", "rows", "written", title="materialized")
    for m in done:
        table.add_row(m.view, m.version, _iso(m.start_us, ""), _iso(m.end_us, ""), str(m.rows),
                      str(m.written))
    out.print(table)


@app.command("import-feast")
def import_feast_repo(
        feast_repo: Annotated[Path, typer.Argument(help="the Feast repo (with feature_store.yaml)")],
        out_dir: Annotated[Path, typer.Option("-o", "--out", help="the featurestore repo to "
                                                                 "write (a new folder)")],
        partial: Annotated[bool, typer.Option(
            help="write what converts even when some definitions do not")] = False,
        ) -> None:
    """Convert a Feast feature repo; list what converted, what converted with a difference, and
    what did not (with why). Anything that does not convert fails the import (exit 1, nothing
    written) unless --partial."""
    result = _guard(lambda: import_feast(feast_repo, out_dir, partial))
    for line in result.converted:  # one line each, unwrapped, so they can be searched
        out.print(f"converted {line}", highlight=False, soft_wrap=True)
    for line in result.notes:
        out.print(f"note: {line}", highlight=False, soft_wrap=True)
    for line in result.skipped:
        err.print(f"not converted: {line}", highlight=False, soft_wrap=True)
    out.print(f"wrote {result.out}; next: featurestore apply --repo {result.out}", highlight=False)


@app.command()
def push(source: Annotated[str, typer.Argument(help="the source the events belong to")],
         file: Annotated[Path, typer.Argument(help="a Parquet or CSV file of events")],
         repo: Repo = Path("feature_repo"),
         batch_id: Annotated[str | None, typer.Option(
             help="names the batch so a retry applies once (default: a hash of the file)")] = None,
         server: Annotated[str | None, typer.Option(
             help="push through a running server (host:port) instead of directly")] = None,
         tls: Tls = False, tls_ca: TlsCa = None, tls_cert: TlsCert = None, tls_key: TlsKey = None,
         token_file: TokenFile = None) -> None:
    """Push a batch of events: logged offline and folded into the online windowed features."""
    def run() -> str:
        if server is None:
            store = _store(repo)
            _start_managed(store, repo)
            r = store.push(source, file, batch_id)
            return (f"{r.rows} events {'already applied' if r.duplicate else 'pushed'} to "
                    f"{r.source} (batch {r.batch_id}): {r.tiles} window keys written, {r.too_late} "
                    "older than every window")
        table = read_events_table(file)
        with _client(server, tls, tls_ca, tls_cert, tls_key, token_file) as client:
            reply = client.push(source, table, batch_id or content_id(table))
        return (f"{reply.rows} events {'already applied' if reply.duplicate else 'pushed'} to "
                f"{source} through {server}: {reply.tiles} window keys written, {reply.too_late} "
                "older than every window")
    out.print(_guard(run), highlight=False)


@app.command()
def serve(repo: Repo = Path("feature_repo"),
          host: Annotated[str, typer.Option(help=(
              "address to listen on: 127.0.0.1 (the default) takes connections from this "
              "machine only; 0.0.0.0 from every network interface (other machines, and a "
              "container's published port, need it); another address, that interface only"))]
          = "127.0.0.1",
          port: Annotated[int, typer.Option(help="gRPC port (1-65535); it must be free",
                                            min=1, max=65535)] = 6566,
          workers: Annotated[int, typer.Option(help="server processes sharing the port",
                                               min=1)] = 1,
          max_batch: Annotated[int, typer.Option(help="most entities per request", min=1)]
          = 10_000,
          tls_cert: Annotated[Path | None, typer.Option(
              "--tls-cert", help="server certificate (PEM): serve over TLS")] = None,
          tls_key: Annotated[Path | None, typer.Option(
              "--tls-key", help="the server certificate's private key (PEM)")] = None,
          tls_client_ca: Annotated[Path | None, typer.Option(
              "--tls-client-ca", help="require client certificates signed by this CA "
                                      "(mutual TLS)")] = None,
          tokens: Annotated[Path | None, typer.Option(
              "--tokens", envvar="FEATURESTORE_TOKENS",
              help="YAML file of token hashes and scopes: callers must send one "
                   "(see `featurestore token`)")] = None,
          reflection: Annotated[bool, typer.Option(help="gRPC server reflection")] = True,
          metrics_port: Annotated[int | None, typer.Option(
              help="serve Prometheus metrics on this port (HTTP, on --host)")] = None,
          http_port: Annotated[int | None, typer.Option(
              help="also answer Feast's HTTP API (POST /get-online-features) on this port, "
                   "on --host, in plain text")] = None,
          log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
          log_format: Annotated[str, typer.Option(help="json (one object per line) or text")]
          = "json",
          access_log_sample: Annotated[float, typer.Option(
              help="share of successful requests logged, 0..1 (failed ones always are)")] = 0.0,
          log_sample: Annotated[float, typer.Option(
              help="fraction of requests (by entity key) logged for `parity --from-log`; "
                   "0 is off")] = 0.0,
          ) -> None:
    """Serve online features over gRPC (with health checking and reflection) until stopped."""
    def run() -> None:
        if bool(tls_cert) != bool(tls_key):
            raise FeatureStoreError("--tls-cert and --tls-key go together")
        if tls_client_ca and not tls_cert:
            raise FeatureStoreError("--tls-client-ca needs --tls-cert and --tls-key")
        _check_choice(log_level, LEVELS, "--log-level")
        _check_choice(log_format, FORMATS, "--log-format")
        if not 0 <= access_log_sample <= 1:
            raise FeatureStoreError(f"--access-log-sample must be between 0 and 1, got "
                                    f"{access_log_sample}")
        if metrics_port is not None and not 0 < metrics_port < 65536:
            raise FeatureStoreError(f"--metrics-port must be 1..65535, got {metrics_port}")
        if http_port is not None and not 0 < http_port < 65536:
            raise FeatureStoreError(f"--http-port must be 1..65535, got {http_port}")
        if http_port is not None and tls_cert:
            raise FeatureStoreError("--http-port serves plain HTTP; it does not go with "
                                    "--tls-cert (put a TLS proxy in front of it instead)")
        tls = TlsFiles(tls_cert, tls_key, tls_client_ca) if tls_cert and tls_key else None
        if tls is not None:
            tls.server_credentials()  # unreadable files fail here, before anything starts
        if tokens is not None:
            Tokens(tokens)  # a bad token file fails here, before anything starts
        run_server(repo, host, port, workers, ServerOptions(
            max_batch=max_batch, tls=tls, tokens=tokens, reflection=reflection,
            log_level=log_level, log_format=log_format, access_log_sample=access_log_sample,
            sample_rate=check_rate(log_sample), http_port=http_port),
            metrics_port)

    _guard(run)


def _check_engine(engine: str | None) -> None:
    if engine is not None:
        _guard(lambda: _check_choice(engine, ENGINES, "--engine"))


def _check_choice(value: str, choices: tuple[str, ...], option: str) -> None:
    if value not in choices:
        raise FeatureStoreError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


@app.command()
def token(name: Annotated[str, typer.Argument(help="who the token is for (shown in logs)")],
          read: Annotated[list[str] | None, typer.Option(
              help="feature service it may read; '*' for all (repeatable)")] = None,
          push: Annotated[list[str] | None, typer.Option(
              help="source it may push to; '*' for all (repeatable)")] = None,
          admin: Annotated[bool, typer.Option(help="may ask for the server's status")] = False
          ) -> None:
    """Make a new bearer token: prints the token (give it to the caller) and the entry to add
    to the server's --tokens file (which keeps only its hash)."""
    secret = new_token()
    entry = {"name": name, "sha256": token_hash(secret), "read": read or [], "push": push or [],
             "admin": admin}
    err.print("the token (shown once; the server keeps only its hash):", highlight=False)
    out.print(secret, highlight=False)
    err.print("add this entry under `tokens:` in the server's --tokens file:\n"
              + yaml.safe_dump([entry], sort_keys=False), highlight=False)


@app.command()
def health(target: Annotated[str, typer.Option(help="server address")] = "127.0.0.1:6566",
           service: Annotated[str, typer.Option(
               help="a gRPC service to ask about; default: the server as a whole")] = "",
           timeout: Annotated[float, typer.Option(help="seconds to wait for the answer",
                                                  min=0.001)] = 3.0,
           wait: Annotated[float, typer.Option(
               help="keep asking for up to this many seconds until it is SERVING (a server "
                    "that is starting)", min=0)] = 0.0,
           tls: Tls = False, tls_ca: TlsCa = None, tls_cert: TlsCert = None,
           tls_key: TlsKey = None) -> None:
    """Ask a server's gRPC health check; exit 0 when it is SERVING, 1 otherwise (NOT_SERVING,
    unreachable, or an unknown --service). For container health checks and probes."""
    def ask() -> str:
        deadline = time.monotonic() + wait
        while True:
            try:
                with _client(target, tls, tls_ca, tls_cert, tls_key, None, timeout) as client:
                    answer = client.health(service)
            except FeatureStoreError:
                if time.monotonic() >= deadline:
                    raise
                answer = ""
            if answer == "SERVING" or time.monotonic() >= deadline:
                return answer
            time.sleep(0.25)

    status = _guard(ask)
    out.print(f"{target}{f' {service}' if service else ''}: {status}", highlight=False)
    if status != "SERVING":
        raise typer.Exit(1)


@app.command()
def parity(service: Annotated[str | None, typer.Option(
               help="feature service to check (not with --from-log)")] = None,
           repo: Repo = Path("feature_repo"),
           sample: Annotated[int, typer.Option(help="entities to sample", min=1)] = 1000,
           target: Annotated[str, typer.Option(help="server address")] = "127.0.0.1:6566",
           as_of: Annotated[str | None, typer.Option(
               "--as-of", help="ISO time with zone; default: end of the last materialization")]
           = None,
           seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
           from_log: Annotated[bool, typer.Option(
               "--from-log", help="recompute the requests servers logged (serve --log-sample)")]
           = False,
           since: Annotated[str | None, typer.Option(
               help="with --from-log: only requests served from this ISO time on")] = None,
           tls: Tls = False, tls_ca: TlsCa = None, tls_cert: TlsCert = None,
           tls_key: TlsKey = None, token_file: TokenFile = None) -> None:
    """Compare a live server with the training set, value by value; exit 1 on any mismatch."""
    store = _store(repo)
    if from_log:
        if service is not None or as_of is not None:
            _fail("--service and --as-of do not apply to --from-log: every logged request is "
                  "recomputed at the time it was served; use --since")
        when = _guard(lambda: _time(since, "--since"))
        _print_log_report(_guard(lambda: check_samples(
            store, to_micros(when) if when is not None else None)), store)
        return
    if service is None or since is not None:
        _fail("--service is required (or --from-log, which --since goes with)")

    def run() -> ParityReport:
        when = _time(as_of, "--as-of")
        with _client(target, tls, tls_ca, tls_cert, tls_key, token_file, 60) as client:
            return check_parity(store, client, service, sample,
                                to_micros(when) if when is not None else None, seed)

    report = _guard(run)
    at = (EPOCH + timedelta(microseconds=report.as_of_us)).isoformat()
    out.print(f"parity of {service} at {at}: {report.entities} entities, {report.values} values, "
              f"{len(report.mismatches)} mismatches"
              + (f" ({report.expired} expired online, reported NOT_FOUND)" if report.expired else ""))
    if report.mismatches:
        table = Table("feature", "row", "keys", "offline", "online", title="mismatches")
        for m in report.mismatches[:50]:
            table.add_row(m.feature, str(m.row), str(m.keys), f"{m.offline!r} {m.offline_status}",
                          f"{m.online!r} {m.online_status}")
        out.print(table)
        raise typer.Exit(1)
    out.print("[green]parity holds[/]")


@app.command()
def status(target: Annotated[str, typer.Option(help="server address")] = "127.0.0.1:6566",
           tls: Tls = False, tls_ca: TlsCa = None, tls_cert: TlsCert = None,
           tls_key: TlsKey = None, token_file: TokenFile = None,
           fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table"
           ) -> None:
    """What a running server serves: health, feature services, and each view's served version,
    materialization and latest push. Exit 1 when it is not SERVING."""
    def fetch() -> Any:
        _check_choice(fmt, ("table", "json"), "--format")
        with _client(target, tls, tls_ca, tls_cert, tls_key, token_file) as client:
            return client.server_status()

    reply = _guard(fetch)
    if fmt == "json":
        out.print_json(json_format.MessageToJson(reply, always_print_fields_with_no_presence=True))
    else:
        out.print(f"project {reply.project!r} on {target}: "
                  + ("[green]SERVING[/]" if reply.serving else "[red]NOT_SERVING[/]")
                  + f" ({reply.health_detail}); pid {reply.pid}, featurestore "
                  f"{reply.featurestore_version}, up since {_iso(reply.started_at_us)}, "
                  f"definitions loaded {_iso(reply.definitions_loaded_at_us)}; online store "
                  f"{reply.online_store}", highlight=False)
        services = Table("feature service", "version", "active", "views")
        for s in reply.feature_services:
            services.add_row(s.name, s.version, "yes" if s.active else "[red]no[/]",
                             ", ".join(s.feature_views))
        out.print(services)
        views = Table("feature view", "version", "served storage", "active", "materialized end",
                      "materialized at", "latest push")
        for v in reply.feature_views:
            views.add_row(v.name, v.version, v.storage or "-", "yes" if v.active else "[red]no[/]",
                          _iso(v.materialized_end_us), _iso(v.materialized_at_us),
                          _iso(v.last_push_us))
        out.print(views)
    if not reply.serving:
        raise typer.Exit(1)


def _iso(us: int | None, missing: str = "-") -> str:
    """UTC epoch microseconds as ISO 8601; `missing` for None (and 0, which protobuf sends for
    "none")."""
    return (EPOCH + timedelta(microseconds=us)).isoformat() if us else missing


def _print_log_report(report: LogReport, store: FeatureStore) -> None:
    folder = samples_dir(store.config.root)
    since = "" if report.since_us is None else \
        f" since {(EPOCH + timedelta(microseconds=report.since_us)).isoformat()}"
    skipped = f"; {report.unreadable} unreadable lines skipped" if report.unreadable else ""
    if not report.samples:
        out.print(f"no sampled requests in {folder}{since}{skipped}: nothing to check. Start "
                  "servers with `featurestore serve --log-sample RATE` (e.g. 0.01)",
                  highlight=False)
        return
    table = Table("selection", "feature", "checked", "mismatched", "rate", "not reproducible",
                  title=f"parity of {report.samples} sampled requests{since}")
    for (selection, feature), c in sorted(report.features.items()):
        rate = f"{c.mismatched / c.checked:.2%}" if c.checked else "-"
        table.add_row(selection, feature, str(c.checked), str(c.mismatched), rate,
                      str(c.not_reproducible))
    out.print(table)
    for reason, count in report.not_reproducible.most_common():
        out.print(f"not reproducible: {reason}: {count} values", highlight=False)
    checked = sum(c.checked for c in report.features.values())
    if report.mismatches:
        table = Table("selection", "feature", "as_of", "keys", "offline", "online",
                      title="mismatches")
        for m in report.mismatches[:50]:
            at = (EPOCH + timedelta(microseconds=m.as_of_us or 0)).isoformat()
            table.add_row(m.selection, m.feature, at, str(m.keys),
                          f"{m.offline!r} {m.offline_status}", f"{m.online!r} {m.online_status}")
        out.print(table)
        out.print(f"{len(report.mismatches)} mismatches in {checked} values checked{skipped}; "
                  f"summary in {folder / SUMMARY}", highlight=False)
        raise typer.Exit(1)
    out.print(f"[green]parity holds[/] for the {checked} values checked{skipped}; summary in "
              f"{folder / SUMMARY}", highlight=False)


Columns = Annotated[list[str] | None, typer.Option(help="NAME=V1,V2,... (repeatable)")]


@app.command()
def get(service: Annotated[str | None, typer.Option(help="feature service")] = None,
        features: Annotated[str | None, typer.Option(
            help="comma-separated: view:feature, view or transform")] = None,
        entity: Columns = None, request: Columns = None,
        as_of: Annotated[str | None, typer.Option(
            "--as-of", help="a date (midnight UTC) or a time with its zone; default now")]
        = None,
        target: Annotated[str, typer.Option(help="server address")] = "127.0.0.1:6566",
        statuses: Annotated[bool, typer.Option(help="csv, json: add <feature>__status columns")]
        = False,
        fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
        tls: Tls = False, tls_ca: TlsCa = None, tls_cert: TlsCert = None, tls_key: TlsKey = None,
        token_file: TokenFile = None) -> None:
    """Ask a running server for online features and print them.

    The table has a row per feature and a column per entity, where a missing value shows its
    status; csv and json have a row per entity."""

    _guard(lambda: _check_choice(fmt, FRAME_FORMATS, "--format"))

    def fetch() -> tuple[dict[str, list[Any]], OnlineFeatures]:
        with _client(target, tls, tls_ca, tls_cert, tls_key, token_file) as client:
            schema = client.feature_service(service) if service else None
            keys = _columns(entity, schema.entity_keys if schema else None)
            inputs = _columns(request, schema.request_inputs if schema else None)
            return keys, client.get_online_features(
                service=service, features=features.split(",") if features else None,
                entities=keys, request=inputs, as_of=_time(as_of, "--as-of"))

    keys, result = _guard(fetch)
    if fmt != "table":
        _print_frame(result.to_polars(statuses), fmt)
        return
    entities = [", ".join(map(str, k)) for k in zip(*keys.values(), strict=True)] or \
        [str(i) for i in range(len(result))]
    table = Table("feature", *entities)
    values = result.to_dict()
    for name in result.names:
        table.add_row(name, *(str(v) if s == Status.PRESENT else f"[dim]{STATUS_NAMES[s]}[/]"
                              for v, s in zip(values[name], result.statuses[name], strict=True)))
    out.print(table)


def _columns(options: list[str] | None, types: dict[str, DType] | None) -> dict[str, list[Any]]:
    """NAME=V1,V2 options as typed values: by the service's schema, else by their look."""
    columns = {}
    for option in options or []:
        name, sep, text = option.partition("=")
        if not sep:
            raise FeatureStoreError(f"{option!r} should look like NAME=V1,V2,...")
        columns[name] = [_value(v, (types or {}).get(name), name) for v in text.split(",")]
    return columns


def _value(text: str, dtype: DType | None, name: str) -> Any:
    if dtype is None:  # no schema: the first reading that fits
        for guess in (Int64, Float64, Bool, Timestamp):
            try:
                return _value(text, guess, name)
            except FeatureStoreError:
                pass
        return text
    try:
        if dtype is Int64:
            return int(text)
        if dtype is Float64:
            return float(text)
    except ValueError as exc:
        raise FeatureStoreError(f"{name}: {text!r} is not {dtype}") from exc
    if dtype is Bool:
        if text.lower() not in ("true", "false"):
            raise FeatureStoreError(f"{name}: {text!r} is not true or false")
        return text.lower() == "true"
    if dtype is Timestamp:
        return _time(text, name)
    assert dtype is String
    return text


FRAME_FORMATS = ("table", "csv", "json")


def _print_frame(frame: pl.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        sys.stdout.write(frame.write_ndjson())
    else:
        with pl.Config(tbl_rows=50, tbl_cols=30, tbl_width_chars=200):
            print(frame)


@app.command()
def ui(repo: Repo = Path("feature_repo"),
       host: Annotated[str, typer.Option(help="address to listen on (127.0.0.1: this machine "
                                              "only)")] = "127.0.0.1",
       port: Annotated[int, typer.Option(help="HTTP port (0: any free one)", min=0,
                                         max=65535)] = 8765) -> None:
    """Serve a read-only feature catalog page (services, views, features, freshness, value
    distributions, parity, lineage) until stopped."""
    from featurestore.ui import serve as serve_catalog

    _guard(lambda: serve_catalog(repo, host, port, lambda url: out.print(
        f"feature catalog of {repo} at {url} (read-only; Ctrl-C stops)", highlight=False,
        markup=False, soft_wrap=True)))


redis_app = typer.Typer(help="The repo's managed redis-server (online_store: managed): "
                             "status, start, stop.", no_args_is_help=True)
app.add_typer(redis_app, name="redis")


def _managed(repo: Path) -> ManagedRedis:
    config = load_config(repo)
    if config.online_store != "managed":
        raise FeatureStoreError(
            f"{config.root / CONFIG_FILE}: online_store is a Redis URL, not 'managed', so "
            "featurestore does not run that Redis: start and stop it where it runs")
    return ManagedRedis(config.root)


@redis_app.command("status")
def redis_status(repo: Repo = Path("feature_repo")) -> None:
    """Whether the managed redis-server runs, with its pid, socket, data dir and memory."""
    status = _guard(lambda: _managed(repo)).status()
    rows = {"state": "running" if status.running else "not running"}
    if status.running:
        rows |= {"pid": str(status.pid), "socket": str(status.socket),
                 "memory": f"{status.memory} used", "keys": str(status.keys),
                 "version": str(status.version)}
    rows["data dir"] = f"{status.dir} ({status.disk_bytes / 1e3:,.0f} kB on disk)"
    for name, value in rows.items():
        out.print(f"{name:<9} {value}", highlight=False, markup=False, soft_wrap=True)
    if status.running:
        out.print(f"stop it with `featurestore redis stop --repo {repo}`", highlight=False,
                  markup=False, soft_wrap=True)
    if os.environ.get("FEATURESTORE_REDIS_URL"):
        out.print("FEATURESTORE_REDIS_URL is set: featurestore commands use that Redis, not this "
                  "one", highlight=False)


@redis_app.command("start")
def redis_start(repo: Repo = Path("feature_repo")) -> None:
    """Start the managed redis-server (materialize, push and serve start it when needed)."""
    managed = _guard(lambda: _managed(repo))
    started = _guard(managed.start)
    out.print(f"{'started' if started else 'already running:'} managed redis-server, pid "
              f"{managed.pid()}, socket {managed.socket}; stop it with `featurestore redis stop "
              f"--repo {repo}`", highlight=False, markup=False, soft_wrap=True)


@redis_app.command("stop")
def redis_stop(repo: Repo = Path("feature_repo")) -> None:
    """Stop the managed redis-server; its data stays in its data dir for the next start."""
    managed = _guard(lambda: _managed(repo))
    pid = managed.pid()
    stopped = _guard(managed.stop)
    out.print(f"stopped managed redis-server (pid {pid}); its data stays in {managed.dir}"
              if stopped else "managed redis-server is not running", highlight=False,
              markup=False, soft_wrap=True)


if __name__ == "__main__":
    app()
