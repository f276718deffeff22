"""What the catalog page shows, read fresh for each page: the definitions as the repo's files
hold them (with their descriptions, which the Plan does not keep), whether each is applied,
the value distributions of the applied feature tables, online freshness, and the summary of
the last live parity check. Reads only; a part that cannot be read says why instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestore.definitions import Definitions
from featurestore.errors import FeatureStoreError
from featurestore.offline import OfflineStore
from featurestore.plan import Plan, build_plan
from featurestore.repo import RepoConfig, load_repo
from featurestore.serving.samples import read_summary, samples_dir
from featurestore.ui.distributions import Distribution, distributions
from featurestore.ui.freshness import Freshness, read_freshness
from featurestore.values.timestamps import now_us

APPLIED, NOT_APPLIED, CHANGED = "applied", "not applied", "changed since apply"


@dataclass(frozen=True)
class Catalog:
    config: RepoConfig
    defs: Definitions
    plan: Plan
    states: dict[tuple[str, str], str]  # (kind as the Plan names it, name) -> APPLIED, ...
    offline_note: str  # why there are no distributions ("" when the offline store was read)
    distributions: dict[str, dict[str, Distribution]]  # view -> feature -> its distribution
    freshness: Freshness
    parity: dict[str, Any]  # the last `parity --from-log` summary; {} when none ran
    read_at_us: int


def read_catalog(root: str | Path) -> Catalog:
    config, defs = load_repo(root)
    plan = build_plan(config.project, defs, config.kernel_cache)
    offline = OfflineStore(config.offline_store, config.root)
    states: dict[tuple[str, str], str] = {}
    found: dict[str, dict[str, Distribution]] = {}
    try:
        diff = offline.diff(plan)
        states |= {(e.kind, e.name): APPLIED for e in diff.unchanged}
        states |= {(e.kind, e.name): NOT_APPLIED for e in diff.added}
        states |= {(e.kind, e.name): CHANGED for e, _ in diff.changed}
        applied = [v for v in plan.views.values() if states.get(("feature_view", v.name)) == APPLIED]
        if applied:
            with offline.sql_session(plan) as session:
                found = {v.name: distributions(session, v) for v in applied}
        note = "" if applied else "no feature view is applied: run `featurestore apply`"
    except FeatureStoreError as exc:
        note = str(exc)
    return Catalog(config, defs, plan, states, note, found, read_freshness(config),
                   read_summary(samples_dir(config.root)), now_us())
