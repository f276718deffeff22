"""Redis Cluster routing for the online store: the slot of a key (CRC16 of its hash tag, as
Redis computes it), the map from slots to the masters serving them (CLUSTER SLOTS), and reads
that cost one round trip per node.

Redis Cluster refuses a multi-key command (MGET, or a script's declared keys) over several
slots, and a read's keys span many slots. So a read sends each node one call of a read-only
script flagged `allow-cross-slot-keys` (Redis 7) that GETs every key of the read that node
serves, passed as arguments; the nodes are asked in parallel. Redis refuses such a script
touching a key of a slot the node does not serve ("non local key": the script's MOVED; so on
Redis 7.0 for a slot moved away, and for a key that already left a slot being migrated), so a
read returns the values a node held at one instant, or an error, never a value of a key the
node no longer owns. On that error the slot map is read again and the read retried once; a
second refusal, an unreachable node or a cluster reporting itself down is OnlineUnavailable,
never values."""

from __future__ import annotations

import asyncio
import binascii
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import hiredis
import numba
import numpy as np
import redis
from redis.cluster import ClusterNode
from redis.exceptions import NoScriptError
from redis.retry import Retry

from featurestore.errors import OnlineDataLost, OnlineStoreError, OnlineTimeout, OnlineUnavailable
from featurestore.online.keys import SLOTS, marker_key
from featurestore.online.redis_async import AsyncRedis, checked
from featurestore.online.urls import RedisSettings


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
        self.owners: list[int] = self.owner.tolist()  # indexed per key on the hot path

    def node_of(self, slot: int) -> tuple[str, int]:
        at = int(self.owner[slot])
        if at < 0:
            raise OnlineUnavailable(f"no node of the Redis Cluster serves slot {slot} (the "
                                    "cluster does not cover every slot)")
        return self.nodes[at]


RowRanges = tuple[str, list[tuple[int, int, str | None]]]  # project, PendingRead.row_ranges()

# GETs its arguments (keys of any slots this node serves): a read of one node at one instant.
READ = """#!lua flags=no-writes,allow-cross-slot-keys
local out = {}
for i = 1, #ARGV do out[i] = redis.call('GET', ARGV[i]) end
return out
"""
READ_SHA = hashlib.sha1(READ.encode()).hexdigest()


@numba.njit(cache=True, nogil=True)
def key_slots(data, offsets):  # type: ignore[no-untyped-def]
    """`key_slot` of each key data[offsets[i]:offsets[i+1]], compiled (CRC16/XMODEM)."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.int64)
    for i in range(n):
        first, end = offsets[i], offsets[i + 1]
        for p in range(first, end):
            if data[p] == 123:  # '{'
                for q in range(p + 1, end):
                    if data[q] == 125:  # '}': the tag, unless empty
                        if q > p + 1:
                            first, end = p + 1, q
                        break
                break
        crc = 0
        for p in range(first, end):
            crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ data[p]) & 0xFF]
        out[i] = crc % SLOTS
    return out


@dataclass(frozen=True)
class NodeRead:
    """One node's part of a read: the positions of its keys, and the project's markers
    (online/keys.py) in their slots with the token each must hold, read in the same call."""

    node: tuple[str, int]
    positions: list[int]
    markers: list[tuple[str, str | None]]  # (marker key, token its row storage recorded)
    args: tuple[Any, ...]  # the script's call

    def fill(self, values: list[bytes | None], reply: list[bytes | None]) -> str | None:
        """Puts the node's values in place; returns what is wrong when a marker is missing
        or holds another token (the node lost keys of a storage, whose rows would read as
        absent), else None."""
        n = len(self.positions)
        for i, value in zip(self.positions, reply, strict=False):
            values[i] = value
        lost = [key for (key, token), value in zip(self.markers, reply[n:], strict=True)
                if value is None or token is None or value.decode() != token]
        return f"{self.node[0]}:{self.node[1]} lost the online store's keys (restarted " \
            f"without persistence, flushed or replaced: {lost[0]} is gone or was written " \
            "again since the storage read was written)" if lost else None


class KeysLost(OnlineDataLost):
    """A node lost a row storage's keys: raised with the values read, so that the reader can
    first check the fence (a storage no longer served is RegistryMoved, not a loss)."""

    def __init__(self, what: str, values: list[bytes | None]):
        super().__init__(f"the Redis Cluster node {what}; run `featurestore materialize` to "
                         "restore them")
        self.values = values


def _filled(reads: list[NodeRead], replies: list[Any], values: list[bytes | None]) -> None:
    """Every node's values in place; KeysLost when a node misses a marker."""
    lost = [what for read, reply in zip(reads, replies, strict=True)
            if (what := read.fill(values, reply)) is not None]
    if lost:
        raise KeysLost(lost[0], values)


def node_reads(keys: list[str], rows: RowRanges | None, slot_map: SlotMap) -> list[NodeRead]:
    """The script calls of a read, one per node serving some of `keys`."""
    encoded = [k.encode() for k in keys]
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum([len(k) for k in encoded], out=offsets[1:])
    slots = key_slots(np.frombuffer(b"".join(encoded), np.uint8), offsets).tolist()
    owner = slot_map.owners
    positions: dict[int, list[int]] = {}
    for i, slot in enumerate(slots):
        positions.setdefault(owner[slot], []).append(i)
    markers: dict[int, dict[tuple[str, str | None], None]] = {j: {} for j in positions}
    if rows:
        names = project_markers(rows[0])
        for first, end, token in rows[1]:
            for slot in slots[first:end]:
                markers[owner[slot]][names[slot], token] = None  # an ordered set
    if -1 in positions:
        raise OnlineUnavailable("the Redis Cluster does not cover every slot")
    return [NodeRead(slot_map.nodes[j], mine, list(markers[j]),
                     ("EVALSHA", READ_SHA, 0, *(keys[p] for p in mine),
                      *(key for key, _ in markers[j])))
            for j, mine in positions.items()]


@functools.lru_cache(maxsize=8)
def project_markers(project: str) -> list[str]:
    """The project's marker key of each slot (built once per process)."""
    return [marker_key(project, slot) for slot in range(SLOTS)]


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
    cache = client.nodes_manager.slots_cache  # slot -> [master, replicas...]
    if any(int(slot) not in cache for slot in distinct):
        raise OnlineUnavailable("the Redis Cluster does not cover every slot")
    owners = [cache[slot][0].name for slot in distinct.tolist()]
    names = list(dict.fromkeys(owners))
    node_of = np.array([names.index(o) for o in owners], np.int64)[inverse]
    return [(client.get_redis_connection(client.get_node(node_name=name)),
             np.flatnonzero(node_of == i)) for i, name in enumerate(names)]


class ClusterReads:
    """Reads on redis-py's cluster client (scripts, tests, parity): the serving reader's
    script calls (`node_reads`), the nodes one after another."""

    def __init__(self, client: redis.RedisCluster):
        self.client = client
        self._map: SlotMap | None = None

    def read(self, keys: list[str], rows: RowRanges) -> list[bytes | None]:
        for attempt in range(2):
            if self._map is None:
                default = self.client.get_redis_connection(self.client.get_default_node())
                self._map = SlotMap(default.execute_command("CLUSTER", "SLOTS"))
            values: list[bytes | None] = [None] * len(keys)
            try:
                reads = node_reads(keys, rows, self._map)
                _filled(reads, [self._call(read) for read in reads], values)
                return values
            except redis.ResponseError as exc:
                if attempt or not _moved(str(exc)):
                    raise
                self._map = None  # a slot moved: read the map again
                self.client.nodes_manager.initialize()
        raise AssertionError("unreachable")

    def _call(self, read: NodeRead) -> list[bytes | None]:
        node = self.client.get_node(host=read.node[0], port=read.node[1])
        if node is None:
            raise redis.ResponseError(f"non local key: node {read.node} is new")
        connection = self.client.get_redis_connection(node)
        try:
            return connection.execute_command(*read.args)  # type: ignore[no-any-return]
        except NoScriptError:
            connection.script_load(READ)
            return connection.execute_command(*read.args)  # type: ignore[no-any-return]


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

    async def mget(self, keys: list[str], timeout: float, rows: RowRanges | None = None
                   ) -> list[bytes | None]:
        """The values of `keys`, in order: one script call per node, the nodes in
        parallel; with the keys of `rows` the markers of their slots."""
        try:
            async with asyncio.timeout(timeout):
                return await self._mget(keys, rows)
        except TimeoutError:
            raise OnlineTimeout(f"Redis did not answer within {timeout * 1000:.1f} ms") \
                from None

    async def _mget(self, keys: list[str], rows: RowRanges | None) -> list[bytes | None]:
        slot_map = await self._slot_map()
        for attempt in range(2):
            values: list[bytes | None] = [None] * len(keys)
            reads = node_reads(keys, rows, slot_map)
            replies = await asyncio.gather(*(self._call(read) for read in reads))
            if not any(isinstance(r, hiredis.ReplyError) and _moved(str(r)) for r in replies):
                _filled(reads, [checked(r, self.settings) for r in replies], values)
                return values
            if attempt == 0:
                slot_map = await self._slot_map(stale=slot_map)
        raise OnlineUnavailable(f"the Redis Cluster {self.where} moved slots again while "
                                "being read (a resharding is under way); retry")

    async def _call(self, read: NodeRead) -> Any:
        node = self._node(read.node)
        (reply,) = await node.execute_many([read.args], timeout=None)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            _, reply = await node.execute_many([("SCRIPT", "LOAD", READ), read.args],
                                               timeout=None)
        return reply

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


def _moved(message: str) -> bool:
    """Whether an error says a key's slot is not (or no longer) served by the node asked."""
    return message.startswith(("MOVED", "ASK", "TRYAGAIN")) or "non local key" in message


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
