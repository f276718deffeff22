"""The registry: which version of each definition is active, and every version ever applied.
It lives in the offline store's DuckDB file and changes only inside apply's transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from featurestore.offline.connection import INTERNAL, SCHEMAS, quote
from featurestore.plan import Plan
from featurestore.plan.hashing import version_of

KIND_KEYS = {"entity": "entities", "source": "sources", "feature_view": "feature_views",
             "transform": "transforms", "feature_service": "feature_services"}


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    for schema in SCHEMAS:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
    con.execute(f"""
        CREATE TABLE IF NOT EXISTS {INTERNAL}.registry (
            kind VARCHAR NOT NULL, name VARCHAR NOT NULL, version VARCHAR NOT NULL,
            hash VARCHAR NOT NULL, spec JSON NOT NULL, applied_at TIMESTAMPTZ NOT NULL,
            active BOOLEAN NOT NULL, PRIMARY KEY (kind, name, version))""")
    con.execute(f"""
        CREATE TABLE IF NOT EXISTS {INTERNAL}.meta (key VARCHAR PRIMARY KEY, value VARCHAR)""")


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    version: str


@dataclass
class PlanDiff:
    added: list[Entry] = field(default_factory=list)
    changed: list[tuple[Entry, str]] = field(default_factory=list)  # (new entry, old version)
    removed: list[Entry] = field(default_factory=list)
    unchanged: list[Entry] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


def has_registry(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = 'registry'",
        [INTERNAL]).fetchall()
    return bool(rows)


def active_versions(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    if not has_registry(con):
        return {}
    rows = con.execute(f"SELECT kind, name, version FROM {INTERNAL}.registry WHERE active").fetchall()
    return {(kind, name): version for kind, name, version in rows}


def diff(plan: Plan, active: dict[tuple[str, str], str]) -> PlanDiff:
    out = PlanDiff()
    current = {key: version_of(h) for key, h in plan.definitions().items()}
    for (kind, name), version in sorted(current.items()):
        entry = Entry(kind, name, version)
        old = active.get((kind, name))
        if old is None:
            out.added.append(entry)
        elif old != version:
            out.changed.append((entry, old))
        else:
            out.unchanged.append(entry)
    out.removed = [Entry(k, n, v) for (k, n), v in sorted(active.items()) if (k, n) not in current]
    return out


def record(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Make the plan's versions the active ones; earlier versions stay as history."""
    specs: dict[str, dict[str, Any]] = plan.to_dict()
    con.execute(f"UPDATE {INTERNAL}.registry SET active = false WHERE active")
    for (kind, name), digest in plan.definitions().items():
        spec = specs[KIND_KEYS[kind]][name]
        con.execute(
            f"""INSERT INTO {INTERNAL}.registry VALUES (?, ?, ?, ?, ?, now(), true)
                ON CONFLICT (kind, name, version) DO UPDATE SET active = true""",
            [kind, name, version_of(digest), digest, json.dumps(spec, sort_keys=True)])
    con.execute(f"INSERT OR REPLACE INTO {INTERNAL}.meta VALUES ('project', ?)", [plan.project])
