"""The online store as the asyncio server reads it: the registry and lookups, over the lean
client in online/redis_async.py, on one pipelined connection (on a Redis Cluster, one per
master: online/cluster.py). Raises OnlineUnavailable when
Redis cannot answer in time and OnlineStoreError when it answers an error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from featurestore.errors import OnlineStoreError, OnlineUnavailable
from featurestore.online import registry
from featurestore.online.cluster import AsyncCluster, KeysLost
from featurestore.online.keys import fresh_key, registry_key
from featurestore.online.lookup import Lookup, OnlineResult
from featurestore.online.redis_async import AsyncRedis
from featurestore.online.registry import Served
from featurestore.online.urls import parse
from featurestore.values.columns import Column

T = TypeVar("T")


class OnlineReader:
    def __init__(self, url: str, project: str, observe: Callable[[bool], None] | None = None):
        """`observe(ok)`: told of every round trip and whether Redis answered it."""
        self.project = project
        settings = parse(url)
        self._redis = AsyncCluster(settings) if settings.cluster else AsyncRedis(settings)
        self._cluster = bool(settings.cluster)
        self.where = self._redis.where  # the URL without its password, for messages
        self._observe = observe

    async def _observed(self, reply: Awaitable[T]) -> T:
        if self._observe is None:
            return await reply
        try:
            value = await reply
        except Exception:
            self._observe(False)
            raise
        self._observe(True)
        return value

    async def served(self, timeout: float) -> tuple[dict[bytes, bytes], dict[str, Served]]:
        """The raw registry (cheap to compare) and the served version of each view."""
        try:
            reply = await self._observed(self._redis.execute(
                "HGETALL", registry_key(self.project), timeout=timeout))
        except (OnlineUnavailable, OnlineStoreError):
            self.reset()  # a connection that failed a command is not trusted again
            raise
        raw = dict(zip(reply[::2], reply[1::2], strict=True))
        return raw, registry.parse(raw)

    async def read(self, lookup: Lookup, entities: dict[str, Column],
                   requests: dict[str, Column], as_of_us: int, timeout: float) -> OnlineResult:
        """One lookup (see PendingRead: the served storages are read with the keys)."""
        pending = lookup.start(entities, as_of_us)
        rows = (self.project, pending.row_ranges()) if self._cluster else None
        try:
            values = await self._observed(self._redis.mget(pending.keys, timeout, rows))
        except KeysLost as lost:
            pending.check_fence(lost.values)  # a flip first: the old storage may be gone
            raise
        return pending.finish(values, requests)

    async def last_pushes(self, served: dict[str, Served], timeout: float
                          ) -> dict[str, int | None]:
        """The ingest time of the latest pushed batch each served storage holds (None: no
        push since it was materialized)."""
        if not served:
            return {}
        reply = await self._observed(self._redis.mget(
            [fresh_key(self.project, v, s.storage) for v, s in served.items()], timeout))
        return {v: int(r) if r else None for v, r in zip(served, reply, strict=True)}

    def reset(self) -> None:
        self._redis.reset()
