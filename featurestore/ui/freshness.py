"""How fresh each view is online, read from the online registry for the catalog page: the
served version, the END of the materialization that wrote it and the latest push it holds.

Reading never starts anything: a managed redis-server that is not running, or a Redis that
does not answer within a second, makes freshness unknown rather than the page fail."""

from __future__ import annotations

from dataclasses import dataclass, field

from featurestore.errors import FeatureStoreError
from featurestore.online.managed import ManagedRedis
from featurestore.online.store import OnlineStore
from featurestore.repo import RepoConfig

TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ViewFreshness:
    version: str  # the version served
    end_us: int | None  # END of the materialization that wrote it
    materialized_at_us: int | None  # when that storage was created
    last_push_us: int | None  # ingest time of the latest push it holds


@dataclass(frozen=True)
class Freshness:
    known: bool
    detail: str  # where it was read, or why it is unknown
    views: dict[str, ViewFreshness] = field(default_factory=dict)


def read_freshness(config: RepoConfig) -> Freshness:
    url, where = config.online_url, ""
    if url == "managed":
        managed = ManagedRedis(config.root)
        if not managed.running():
            return Freshness(False, "the repo's managed redis-server is not running")
        url, where = managed.url, "the repo's managed redis-server"
    try:
        with OnlineStore(url, config.project, timeout=TIMEOUT_S) as online:
            served = online.served()
            pushes = online.last_pushes(served)
            where = where or online.settings.where
    except FeatureStoreError as exc:
        return Freshness(False, str(exc))
    return Freshness(True, f"online registry of {where}", {
        name: ViewFreshness(s.view.version, s.end_us, s.created_us,
                            pushes.get(name))
        for name, s in served.items()})
