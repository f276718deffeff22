"""The online executor for one feature selection: which keys to read, and how the rows and
tiles read become feature values and statuses. It does no I/O, so the gRPC server (async) and
any synchronous caller share it. A caller does:

    values = MGET(lookup.keys(entities, as_of))
    extra = lookup.head_keys(values, n, as_of)     # raw head events; almost always empty
    result = lookup.assemble(values, n, requests, as_of, MGET(extra) if extra else [])"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from featurestore.aggregation.layout import empty_outputs
from featurestore.aggregation.tiles import add_head_events, finish_rows
from featurestore.definitions.types import DType
from featurestore.errors import NotAppliedError
from featurestore.online.codec import RowSchema, decode
from featurestore.online.keys import entity_tags, key_text, view_prefix
from featurestore.online.tile_format import head_max_ts, index_blocks, merge_windows
from featurestore.online.tiles import TileGroup, WindowUnavailable, decode_events, groups
from featurestore.plan import Plan, Selection
from featurestore.plan.execute import run_transforms
from featurestore.plan.plan import AggregatePlan
from featurestore.values.columns import Column
from featurestore.values.status import NOT_FOUND, NULL, OUTSIDE_TTL, PRESENT


@dataclass(frozen=True)
class ServedView:
    """The materialized version of a view that lookups read."""

    name: str
    version: str
    entity: str
    join_keys: tuple[tuple[str, DType], ...]
    features: tuple[tuple[str, DType], ...]
    ttl_us: int | None
    aggregates: tuple[AggregatePlan, ...] = ()


@dataclass
class FeatureValues:
    name: str
    dtype: DType
    column: Column
    status: np.ndarray  # uint8 Status per entity


@dataclass
class OnlineResult:
    features: list[FeatureValues]
    event_ts: dict[str, np.ndarray]  # view -> event timestamp (micros) of the row served, 0 if none
    transform_errors: dict[str, int]


class Lookup:
    def __init__(self, project: str, plan: Plan, selection: Selection,
                 served: dict[str, ServedView]):
        self.plan, self.selection = plan, selection
        # Per view: what it serves, its row schema, its key prefix, the features read as
        # (ref, index in the row), and those indices as an array.
        self.views: list[tuple[ServedView, RowSchema, str, list[tuple[str, int]], np.ndarray]] = []
        self.windowed: list[tuple[ServedView, str, list[TileGroup], list[str]]] = []
        self._memo: tuple[list[bytes | None], int, list[Any]] | None = None
        for name, wanted in selection.views.items():
            view = served.get(name)
            if view is None:
                raise NotAppliedError(
                    f"feature view {name!r} has no materialized version online; run "
                    "`featurestore materialize`")
            index = {f: i for i, (f, _) in enumerate(view.features)}
            dtypes = dict(view.features)
            for feature in wanted:
                if feature not in index or dtypes[feature] != plan.views[name].dtype(feature):
                    raise NotAppliedError(
                        f"feature {name}:{feature} is not in the version of {name!r} being served "
                        f"({view.version}); materialize version {plan.views[name].version} first")
            if view.aggregates:
                self.windowed.append((view, view_prefix(project, name, view.version),
                                      groups(view.aggregates), wanted))
                continue
            self.views.append((view, RowSchema(view.features),
                               view_prefix(project, name, view.version),
                               [(f"{name}:{f}", index[f]) for f in wanted],
                               np.array([index[f] for f in wanted], np.int64)))

    def keys(self, entities: dict[str, Column], as_of_us: int) -> list[str]:
        """Every view's keys for the batch, view after view, then every windowed view's
        tiles: per hop group, entity after entity, oldest tile first."""
        out: list[str] = []
        texts = {k: key_text(column) for k, column in entities.items()}  # shared by views
        for view, _, prefix, _, _ in self.views:
            tags = entity_tags(view.entity, [texts[k] for k, _ in view.join_keys])
            out += [prefix + tag for tag in tags]
        for view, prefix, tile_groups, _ in self.windowed:
            tags = entity_tags(view.entity, [texts[k] for k, _ in view.join_keys])
            for g in tile_groups:
                suffixes = [f":t{g.hop_us}:{b}" for b in g.blocks(as_of_us // g.hop_us)]
                out += [prefix + tag + suffix for tag in tags for suffix in suffixes]
        return out

    def _groups(self, n: int, as_of_us: int
                ) -> list[tuple[ServedView, TileGroup, list[str], int, range]]:
        """Each windowed view's hop groups, with where their blocks start in `values`."""
        out, at = [], len(self.views) * n
        for view, _, tile_groups, wanted in self.windowed:
            for g in tile_groups:
                blocks = g.blocks(as_of_us // g.hop_us)
                out.append((view, g, wanted, at, blocks))
                at += n * len(blocks)
        return out

    def _parsed(self, values: list[bytes | None], n: int, as_of_us: int) -> list[Any]:
        """Per hop group: (view, group, wanted, where its blocks start, block numbers, buffer,
        tile bounds, late heads). Kept for the values last parsed, since head_keys and
        assemble both need it for the same read."""
        if self._memo is not None and self._memo[0] is values and self._memo[1] == as_of_us:
            return self._memo[2]  # type: ignore[no-any-return]
        parsed = []
        for view, g, wanted, at, blocks in self._groups(n, as_of_us):
            buf, lo, hi = _tiles(g, values[at:at + n * len(blocks)], n, blocks, as_of_us)
            late = head_max_ts(buf, lo, hi, n, g.span) > as_of_us
            parsed.append((view, g, wanted, at, blocks, buf, lo, hi, late))
        self._memo = (values, as_of_us, parsed)
        return parsed

    def head_keys(self, keys: list[str], values: list[bytes | None], n: int,
                  as_of_us: int) -> list[str]:
        """Keys of the raw head events needed where a head tile holds events after as_of."""
        out = []
        for _, g, _, at, blocks, _, _, _, late in self._parsed(values, n, as_of_us):
            for r in np.flatnonzero(late):
                block = keys[at + r * len(blocks)]
                out.append(g.events_key(block.rsplit(":t", 1)[0], as_of_us // g.hop_us))
        return out

    def assemble(self, values: list[bytes | None], n: int, requests: dict[str, Column],
                 as_of_us: int, heads: list[bytes | None] | None = None) -> OnlineResult:
        columns: dict[str, Column] = {}
        statuses: dict[str, np.ndarray] = {}
        event_ts: dict[str, np.ndarray] = {}
        for k, (view, schema, _, wanted, index) in enumerate(self.views):
            rows = decode(schema, values[k * n:(k + 1) * n])
            valid, status = _visibility(rows.found, rows.event_ts, rows.valid, index,
                                        -1 if view.ttl_us is None else view.ttl_us, as_of_us)
            valid.flags.writeable = False  # kernels take read-only inputs (see plan.kernels)
            for j, (ref, i) in enumerate(wanted):
                columns[ref] = Column(rows.values(i), valid[j])
                statuses[ref] = status[j]
            event_ts[view.name] = rows.event_ts
        heads = list(heads or [])
        for view, g, wanted, _, _, buf, lo, hi, late in self._parsed(values, n, as_of_us):
            acc = merge_windows(g.layout.spec, g.layout.width, as_of_us // g.hop_us, buf, lo, hi,
                                n, g.span, ~late)
            if late.any():
                rows = np.flatnonzero(late)
                blobs, heads = heads[:len(rows)], heads[len(rows):]
                if any(b is None for b in blobs):
                    raise WindowUnavailable(
                        f"feature view {view.name!r}: the raw events of the hop holding "
                        f"as_of {as_of_us} have expired online; read windowed features as of "
                        "now, or as of the past from a training set")
                owner, xi, xf, m, ts, created = decode_events(g.layout, blobs, rows.tolist())
                add_head_events(g.layout.spec, acc, owner, xi, xf, m, ts, created, as_of_us)
            out_i, out_f, valid = empty_outputs(g.layout, n)
            finish_rows(g.layout.spec, acc, out_i, out_f, valid)
            for agg, column in zip(g.layout.aggregations, g.layout.outputs(out_i, out_f, valid),
                                   strict=True):
                if agg.name in wanted:
                    column.valid.flags.writeable = False
                    columns[f"{view.name}:{agg.name}"] = column
                    statuses[f"{view.name}:{agg.name}"] = np.where(column.valid, PRESENT, NULL)
        errors = run_transforms(self.selection, columns, statuses, requests)
        return OnlineResult(
            [FeatureValues(o.name, o.dtype, columns[o.ref], statuses[o.ref])
             for o in self.selection.outputs], event_ts, errors)


def read(lookup: Lookup, client: Any, entities: dict[str, Column], requests: dict[str, Column],
         as_of_us: int) -> OnlineResult:
    """The whole protocol over a synchronous Redis client (redis-py): for scripts and tests;
    the server does the same over its asyncio client."""
    n = len(next(iter(entities.values())))
    keys = lookup.keys(entities, as_of_us)
    values = client.mget(keys) if keys else []
    extra = lookup.head_keys(keys, values, n, as_of_us)
    return lookup.assemble(values, n, requests, as_of_us, client.mget(extra) if extra else [])


def _tiles(g: TileGroup, blocks: list[bytes | None], n: int, numbers: range, as_of_us: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blocks read for one hop group as one buffer, and where each tile of each entity's
    window lies in it."""
    parts = [b or b"" for b in blocks]
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    buf = np.frombuffer(b"".join(parts), np.uint8)
    head = as_of_us // g.hop_us
    lo, hi = index_blocks(buf, offsets, n, len(numbers), numbers.start, head - g.span + 1,
                          g.span, g.per_block)
    return buf, lo, hi


@numba.njit(cache=True, nogil=True)
def _visibility(found, event_ts, valid, index, ttl_us, as_of_us):  # type: ignore[no-untyped-def]
    """Validity and status of the features read from a view's rows: NOT_FOUND without a row,
    OUTSIDE_TTL when the row's event is older than as_of - ttl (ttl_us < 0: none), else
    PRESENT or NULL. The same rule the offline join states in SQL."""
    k, n = index.shape[0], found.shape[0]
    out_valid = np.zeros((k, n), np.bool_)
    status = np.empty((k, n), np.uint8)
    for r in range(n):
        if not found[r]:
            state = NOT_FOUND
        elif ttl_us >= 0 and event_ts[r] < as_of_us - ttl_us:
            state = OUTSIDE_TTL
        else:
            state = PRESENT
        for j in range(k):
            ok = state == PRESENT and valid[index[j], r]
            out_valid[j, r] = ok
            status[j, r] = PRESENT if ok else NULL if state == PRESENT else state
    return out_valid, status
