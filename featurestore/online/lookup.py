"""The online executor for one feature selection: which keys a read needs, and how the rows
and tiles read become feature values and statuses. It does no I/O, so the asyncio server
and the synchronous store share it (see `PendingRead` for the protocol)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from featurestore.aggregation.layout import empty_outputs
from featurestore.definitions.types import DType
from featurestore.errors import (
    NotAppliedError,
    OnlineDataLost,
    OnlineStoreError,
    PastReadRefused,
    RegistryMoved,
)
from featurestore.online.codec import RowSchema, decode
from featurestore.online.keys import (
    EXPIRY_MARGIN_US,
    active_key,
    entity_bases,
    fresh_key,
    key_text,
    window_key,
)
from featurestore.online.registry import Served
from featurestore.online.tile_format import merge_windows
from featurestore.online.tiles import TileGroup, groups
from featurestore.plan import Plan, Selection, ViewPlan
from featurestore.plan.execute import run_transforms
from featurestore.values.columns import Column
from featurestore.values.status import NOT_FOUND, NULL, OUTSIDE_TTL, PRESENT
from featurestore.values.timestamps import now_us


@dataclass(slots=True)  # built per feature and request
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


@dataclass(frozen=True)
class RowView:
    """A row view a selection reads: the served version and storage, its row layout, and the
    features wanted: their refs and their indices in the row."""

    view: ViewPlan
    storage: str
    created_us: int  # the storage's oldest write: keys of a ttl view expire from then on
    schema: RowSchema
    refs: tuple[str, ...]
    indices: tuple[int, ...]
    index: np.ndarray  # the indices as an array, for the kernel


@dataclass(frozen=True)
class WindowView:
    """A windowed view a selection reads: its storage, hop groups and the aggregates wanted."""

    view: ViewPlan
    storage: str
    end_us: int  # END of the materialization that wrote the storage
    groups: tuple[TileGroup, ...]
    wanted: frozenset[str]


class Lookup:
    """Prepared once per feature selection and served versions; shared by concurrent
    requests, so it holds nothing that changes per request (that lives in `PendingRead`)."""

    def __init__(self, project: str, plan: Plan, selection: Selection,
                 served: dict[str, Served]):
        self.project, self.plan, self.selection = project, plan, selection
        rows: list[RowView] = []
        windows: list[WindowView] = []
        for name, wanted in selection.views.items():
            if name not in served:
                raise NotAppliedError(
                    f"feature view {name!r} has no materialized version online; run "
                    "`featurestore materialize`")
            view, storage = served[name].view, served[name].storage
            index = {f: i for i, (f, _) in enumerate(view.features)}
            dtypes = dict(view.features)
            for feature in wanted:
                if feature not in index or dtypes[feature] != plan.views[name].dtype(feature):
                    raise NotAppliedError(
                        f"feature {name}:{feature} is not in the version of {name!r} being served "
                        f"({view.version}); materialize version {plan.views[name].version} first")
            if view.aggregates:
                windows.append(WindowView(view, storage, served[name].end_us or 0,
                                          tuple(groups(view.aggregates)), frozenset(wanted)))
            else:
                rows.append(RowView(view, storage, served[name].created_us or 0,
                                    RowSchema(view.features),
                                    tuple(f"{name}:{f}" for f in wanted),
                                    tuple(index[f] for f in wanted),
                                    np.array([index[f] for f in wanted], np.int64)))
        self.rows, self.windows = tuple(rows), tuple(windows)
        views = (*self.rows, *self.windows)
        self.fence = [active_key(project, item.view.name) for item in views] + [
            fresh_key(project, w.view.name, w.storage) for w in self.windows]
        self._storages = [item.storage.encode() for item in views]
        outputs = selection.outputs  # as columns, so that a read maps over them in C
        self.outputs = (tuple(o.name for o in outputs), tuple(o.dtype for o in outputs),
                        tuple(o.ref for o in outputs))

    def check_fence(self, fence: list[bytes | None], as_of_us: int) -> None:
        """Checks the values of the `fence` keys, read with the data keys: the storages
        this lookup reads must still be the served ones, and a windowed view is read as of
        its materialization's END or later, and not before the last push it holds (the tiles
        hold every event visible by then, so an earlier as_of cannot be answered exactly)."""
        active = fence[:len(self._storages)]
        if active != self._storages:
            self._moved(active)
        for w, fresh in zip(self.windows, fence[len(self._storages):], strict=True):
            earliest = max(w.end_us, int(fresh or 0))
            if as_of_us < earliest:
                raise PastReadRefused(
                    f"feature view {w.view.name!r} cannot be read online as of {as_of_us}: its "
                    f"tiles hold events visible up to {earliest} (materialized or pushed), "
                    f"so the earliest as_of it answers exactly is {earliest}; read older "
                    "values from a training set")

    def _moved(self, active: list[bytes | None]) -> None:
        if all(a is None for a in active):
            raise OnlineDataLost(
                f"the online store holds no served storage for project {self.project!r}: "
                "Redis lost its data (restarted without persistence, flushed or replaced); "
                "run `featurestore materialize` to restore it")
        raise RegistryMoved("a feature view's served storage changed; prepare the read again")

    def start(self, entities: dict[str, Column], as_of_us: int) -> PendingRead:
        """The keys of one read: the fence (each view's served storage), every row view's
        keys, view after view, then every windowed view's window keys: per hop group, entity
        after entity."""
        n = len(next(iter(entities.values())))
        texts = {k: key_text(column) for k, column in entities.items()}  # shared by views
        keys: list[str] = list(self.fence)
        bases: dict[str, list[str]] = {}
        for views in (self.rows, self.windows):
            for item in views:
                v = item.view
                bases[v.name] = entity_bases(self.project, v.name, item.storage, v.entity,
                                             [texts[k] for k, _ in v.join_keys])
        for row in self.rows:
            keys += bases[row.view.name]
        for window in self.windows:
            for g in window.groups:
                keys += [window_key(base, g.hop_us) for base in bases[window.view.name]]
        return PendingRead(self, n, as_of_us, keys)


class PendingRead:
    """One read in progress. The protocol, over any Redis client:

        read = lookup.start(entities, as_of)
        values = MGET(read.keys)
        extra = read.head_keys(values)      # always empty: the window keys hold it all
        result = read.finish(values, requests, MGET(extra) if extra else [])

    The first keys are the fence: `head_keys` raises RegistryMoved or OnlineDataLost unless
    they still name the storages the lookup reads, so a flip or a Redis that lost its data
    is never read as values."""

    def __init__(self, lookup: Lookup, n: int, as_of_us: int, keys: list[str]):
        self.lookup, self.n, self.as_of_us, self.keys = lookup, n, as_of_us, keys
        self._values: list[bytes | None] | None = None  # the values after the fence

    def head_keys(self, values: list[bytes | None]) -> list[str]:
        """Checks the fence; no read needs further keys."""
        fence = len(self.lookup.fence)
        self.lookup.check_fence(values[:fence], self.as_of_us)
        self._values = values[fence:]
        return []

    def finish(self, values: list[bytes | None], requests: dict[str, Column],
               heads: list[bytes | None] | None = None) -> OnlineResult:
        if self._values is None:
            self.head_keys(values)
        values = self._values
        n, as_of_us = self.n, self.as_of_us
        columns: dict[str, Column] = {}
        statuses: dict[str, np.ndarray] = {}
        event_ts: dict[str, np.ndarray] = {}
        for k, row in enumerate(self.lookup.rows):
            rows = decode(row.schema, values[k * n:(k + 1) * n])
            ttl = row.view.ttl_us
            valid, status, newer, latest, missing = _visibility(
                rows.found, rows.event_ts, rows.visible, rows.valid, row.index,
                -1 if ttl is None else ttl, as_of_us)
            if newer:
                raise PastReadRefused(
                    f"feature view {row.view.name!r} cannot be read online as of {as_of_us}: "
                    f"it holds rows of {newer} of these entities that became visible later; "
                    f"the earliest as_of it answers exactly for them is {latest}; read older "
                    "values from a training set")
            if missing:
                _check_expiry(row, as_of_us)
            valid.flags.writeable = False  # kernels take read-only inputs (see plan.kernels)
            columns.update(zip(row.refs, map(Column, rows.values_of(row.indices), valid),
                               strict=True))
            statuses.update(zip(row.refs, status, strict=True))
            event_ts[row.view.name] = rows.event_ts
        at = len(self.lookup.rows) * n
        for window in self.lookup.windows:
            for g in window.groups:
                layout, name = g.layout, window.view.name
                buf, offsets = _joined(values[at:at + n])
                at += n
                out_i, out_f, valid = empty_outputs(layout, n)
                ahead = merge_windows(layout.spec, layout.width, g.coarse, as_of_us // g.hop_us,
                                      as_of_us, buf, offsets, n, g.span, out_i, out_f, valid)
                if ahead:
                    raise OnlineStoreError(
                        f"feature view {name!r}: {ahead} stored tiles hold events after as_of "
                        f"{as_of_us}, which its fence should have refused; run `featurestore "
                        "materialize`")
                for agg, column in zip(layout.aggregations,
                                       layout.outputs(out_i, out_f, valid), strict=True):
                    if agg.name in window.wanted:
                        column.valid.flags.writeable = False
                        columns[f"{name}:{agg.name}"] = column
                        statuses[f"{name}:{agg.name}"] = np.where(column.valid, PRESENT, NULL)
        errors = run_transforms(self.lookup.selection, columns, statuses, requests)
        names, dtypes, refs = self.lookup.outputs
        return OnlineResult(
            list(map(FeatureValues, names, dtypes, map(columns.__getitem__, refs),
                     map(statuses.__getitem__, refs))), event_ts, errors)


def _check_expiry(row: RowView, as_of_us: int) -> None:
    """A missing key of a view with a ttl is either a never-seen entity or a key Redis
    expired, whose row may still have been inside the ttl at an as_of more than
    EXPIRY_MARGIN_US ago: such a read is refused once any key of the storage can have
    expired (ttl after the storage's creation)."""
    ttl = row.view.ttl_us
    now = now_us()
    if ttl is None or as_of_us >= now - EXPIRY_MARGIN_US or now < row.created_us + ttl:
        return
    raise PastReadRefused(
        f"feature view {row.view.name!r} cannot be read online as of {as_of_us}: some of these "
        "entities have no key, and keys expire ttl after their event time, so they may have "
        f"had a value then; the earliest as_of it answers exactly is {now - EXPIRY_MARGIN_US}; "
        "read older values from a training set")


def _joined(values: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Values read as one buffer and where each lies in it (absent: empty)."""
    parts = [v or b"" for v in values]
    offsets = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return np.frombuffer(b"".join(parts), np.uint8), offsets


@numba.njit(cache=True, nogil=True)
def _visibility(found, event_ts, visible, valid, index, ttl_us, as_of_us):  # type: ignore[no-untyped-def]
    """Validity and status of the features read from a view's rows: NOT_FOUND without a row,
    OUTSIDE_TTL when the row's event is older than as_of - ttl (ttl_us < 0: none), else
    PRESENT or NULL. The same rule the offline join states in SQL. Also: how many rows
    became visible after as_of and the latest such time (a past read the row cannot answer),
    and whether any key was missing."""
    k, n = index.shape[0], found.shape[0]
    out_valid = np.zeros((k, n), np.bool_)
    status = np.empty((k, n), np.uint8)
    newer, latest, missing = 0, np.int64(0), False
    for r in range(n):
        if found[r] and visible[r] > as_of_us:
            newer += 1
            latest = max(latest, visible[r])
        if not found[r]:
            missing = True
            state = NOT_FOUND
        elif ttl_us >= 0 and event_ts[r] < as_of_us - ttl_us:
            state = OUTSIDE_TTL
        else:
            state = PRESENT
        for j in range(k):
            ok = state == PRESENT and valid[index[j], r]
            out_valid[j, r] = ok
            status[j, r] = PRESENT if ok else NULL if state == PRESENT else state
    return out_valid, status, newer, latest, missing
