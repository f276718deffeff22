"""Redis Cluster routing for the online store: the slot of a key (CRC16 of its hash tag, as
Redis computes it), the map from slots to the nodes serving them (from CLUSTER SLOTS), and
the serving reader's cluster transport: a read is one MGET per slot, the MGETs of one node
pipelined on its connection and the nodes asked in parallel, so a read costs one round trip
per node. A reply saying a slot moved (MOVED, a resharding: the map is read again) or is
moving (ASK: that node is asked once, after ASKING) is retried once; an unreachable node or
a cluster that reports itself down is OnlineUnavailable, never values."""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Iterable
from typing import Any

import hiredis
import numba
import numpy as np
import redis
from redis.cluster import ClusterNode
from redis.retry import Retry

from featurestore.errors import OnlineStoreError, OnlineTimeout, OnlineUnavailable
from featurestore.online.redis_async import AsyncRedis, checked
from featurestore.online.urls import RedisSettings

SLOTS = 16384


def tag(key: str | bytes) -> bytes:
    """The part of the key Redis hashes: between the first '{' and the next '}' when that is
    not empty, else the whole key."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            return raw[start + 1:end]
    return raw


def key_slot(key: str | bytes) -> int:
    return binascii.crc_hqx(tag(key), 0) % SLOTS


_CRC_TABLE = np.array([binascii.crc_hqx(bytes([b]), 0) for b in range(256)], np.int64)


@numba.njit(cache=True, nogil=True)
def tag_slots(data, offsets, skip):  # type: ignore[no-untyped-def]
    """The slot of each key data[offsets[i]:offsets[i+1]] whose tag starts `skip` bytes in
    and ends one byte before its end (a row view's base, online/keys.py): CRC16 (XMODEM)."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.int64)
    for i in range(n):
        crc = 0
        for p in range(offsets[i] + skip, offsets[i + 1] - 1):
            crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ data[p]) & 0xFF]
        out[i] = crc % SLOTS
    return out


class SlotMap:
    """Slot -> node (host, port) of a cluster, read from a CLUSTER SLOTS reply."""

    def __init__(self, reply: list[Any]):
        self.nodes: list[tuple[str, int]] = []
        self.owner = np.full(SLOTS, -1, np.int64)
        for entry in reply:
            first, last, master = int(entry[0]), int(entry[1]), entry[2]
            node = (master[0].decode() if isinstance(master[0], bytes) else master[0],
                    int(master[1]))
            if node not in self.nodes:
                self.nodes.append(node)
            self.owner[first:last + 1] = self.nodes.index(node)

    def node_of(self, slot: int) -> tuple[str, int]:
        at = int(self.owner[slot])
        if at < 0:
            raise OnlineUnavailable(f"no node of the Redis Cluster serves slot {slot} (the "
                                    "cluster does not cover every slot)")
        return self.nodes[at]


def grouped(keys: Iterable[str | bytes]) -> dict[int, list[int]]:
    """Slot -> the positions of its keys."""
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key_slot(key), []).append(i)
    return groups


def connect_cluster(settings: RedisSettings, timeout: float | None, retry: Retry
                    ) -> redis.RedisCluster:
    """redis-py's cluster client (writers, scripts, parity): it reads the slot map from the
    startup nodes now, and follows MOVED and ASK itself."""
    return redis.RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in settings.cluster],
        **{k: v for k, v in settings.redis_py().items() if k not in ("host", "port")},
        socket_timeout=timeout, retry=retry)


def node_groups(client: redis.RedisCluster, slots: np.ndarray
                ) -> list[tuple[redis.Redis, np.ndarray]]:
    """Each master serving some of `slots` (one per key), with the positions of its keys."""
    distinct, inverse = np.unique(slots, return_inverse=True)
    owners = [client.nodes_manager.get_node_from_slot(int(slot)).name for slot in distinct]
    names = list(dict.fromkeys(owners))
    node_of = np.array([names.index(o) for o in owners], np.int64)[inverse]
    return [(client.get_redis_connection(client.get_node(node_name=name)),
             np.flatnonzero(node_of == i)) for i, name in enumerate(names)]


class AsyncCluster:
    """The serving reader's client of a Redis Cluster: a lean connection (redis_async.py)
    per master, the slot map read from the startup nodes on first use."""

    def __init__(self, settings: RedisSettings):
        self.settings = settings
        self.where = settings.where
        self._nodes: dict[tuple[str, int], AsyncRedis] = {}
        self._map: SlotMap | None = None
        self._mapping = asyncio.Lock()

    def _node(self, node: tuple[str, int]) -> AsyncRedis:
        if node not in self._nodes:
            self._nodes[node] = AsyncRedis(self.settings.node(*node))
        return self._nodes[node]

    async def _slot_map(self, stale: SlotMap | None = None) -> SlotMap:
        """The slot map, read again when it is still `stale` (a MOVED reply said so)."""
        async with self._mapping:
            if self._map is None or self._map is stale:
                self._map = await self._read_map()
            return self._map

    async def _read_map(self) -> SlotMap:
        known = list(dict.fromkeys([*self.settings.cluster, *self._nodes]))
        failures = []
        for node in known:
            try:
                reply = checked((await self._node(node).execute_many(
                    [("CLUSTER", "SLOTS")], timeout=None))[0], self.settings)
            except (OnlineUnavailable, OnlineStoreError) as exc:
                failures.append(str(exc))
                continue
            return SlotMap(reply)
        raise OnlineUnavailable(f"no node of the Redis Cluster {self.where} answers: "
                                f"{'; '.join(failures)}")

    async def execute(self, *args: Any, timeout: float) -> Any:
        """A command on one key (args[1]), sent to the node serving its slot."""
        replies = await self.pipelined(args[1], [args], timeout)
        return replies[0]

    async def mget(self, keys: list[str], timeout: float) -> list[bytes | None]:
        """The values of `keys`, in order: one MGET per slot, pipelined per node, the nodes
        in parallel."""
        try:
            async with asyncio.timeout(timeout):
                return await self._mget(keys)
        except TimeoutError:
            raise OnlineTimeout(f"Redis did not answer within {timeout * 1000:.1f} ms") \
                from None

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        slot_map = await self._slot_map()
        groups = grouped(keys)
        values: list[bytes | None] = [None] * len(keys)
        todo = list(groups.items())
        for attempt in range(2):
            by_node: dict[tuple[str, int], list[tuple[int, list[int]]]] = {}
            for slot, positions in todo:
                by_node.setdefault(slot_map.node_of(slot), []).append((slot, positions))
            sent = list(by_node.items())
            replies = await asyncio.gather(*(
                self._node(node).execute_many(
                    [("MGET", *(keys[i] for i in positions)) for _, positions in members],
                    timeout=None)
                for node, members in sent))
            retry, asked = [], []
            for (_, members), node_replies in zip(sent, replies, strict=True):
                for (slot, positions), reply in zip(members, node_replies, strict=True):
                    moved = _redirect(reply)
                    if moved is None:
                        for i, value in zip(positions, checked(reply, self.settings),
                                            strict=True):
                            values[i] = value
                    elif moved[0] == "ASK":
                        asked.append((moved[1], slot, positions))
                    else:
                        retry.append((slot, positions))
            for node, _, positions in asked:  # a slot being migrated: ask its new node once
                _, reply = await self._node(node).execute_many(
                    [("ASKING",), ("MGET", *(keys[i] for i in positions))], timeout=None)
                for i, value in zip(positions, checked(reply, self.settings), strict=True):
                    values[i] = value
            if not retry:
                return values
            if attempt == 0:
                slot_map = await self._slot_map(stale=slot_map)
            todo = retry
        raise OnlineUnavailable(f"the Redis Cluster {self.where} moved slots "
                                f"{sorted(s for s, _ in todo)[:5]} again while being read; retry")

    async def pipelined(self, key: str, commands: list[tuple[Any, ...]], timeout: float
                        ) -> list[Any]:
        """Commands on one slot (that of `key`), following a MOVED once."""
        slot = key_slot(key)
        try:
            async with asyncio.timeout(timeout):
                slot_map = await self._slot_map()
                for attempt in range(2):
                    node = slot_map.node_of(slot)
                    replies = await self._node(node).execute_many(commands, timeout=None)
                    if all(_redirect(r) is None for r in replies):
                        return [checked(r, self.settings) for r in replies]
                    if attempt == 0:
                        slot_map = await self._slot_map(stale=slot_map)
        except TimeoutError:
            raise OnlineTimeout(f"Redis did not answer within {timeout * 1000:.1f} ms") \
                from None
        raise OnlineUnavailable(f"the Redis Cluster {self.where} moved slot {slot} again "
                                "while being read; retry")

    def reset(self) -> None:
        for node in self._nodes.values():
            node.reset()
        self._map = None


def _redirect(reply: Any) -> tuple[str, tuple[str, int]] | None:
    """("MOVED" or "ASK", the node named) for a redirection reply, else None."""
    if not isinstance(reply, hiredis.ReplyError):
        return None
    kind, _, rest = str(reply).partition(" ")
    if kind not in ("MOVED", "ASK"):
        return None
    address = rest.split(" ")[-1]
    host, _, port = address.rpartition(":")
    return kind, (host, int(port))
