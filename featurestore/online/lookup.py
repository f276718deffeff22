"""The online executor for one feature selection: which keys a read needs, and how the rows
and tiles read become feature values and statuses. It does no I/O, so the asyncio server
and the synchronous store share it (see `PendingRead` for the protocol)."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from featurestore.aggregation.layout import empty_outputs
from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import (
    NotAppliedError,
    OnlineDataLost,
    OnlineStoreError,
    PastReadRefused,
    RegistryMoved,
)
from featurestore.online.codec import HEADER_BYTES, RowSchema, int64_at, uint32_at
from featurestore.online.keys import (
    EXPIRY_MARGIN_US,
    active_key,
    entity_bases,
    fresh_key,
    key_text,
    push_key,
    window_key,
)
from featurestore.online.registry import Served
from featurestore.online.tile_format import merge_windows
from featurestore.online.tiles import TileGroup, groups, stored_values
from featurestore.plan import Plan, Selection, ViewPlan
from featurestore.plan.execute import computed_status, run_transforms
from featurestore.values.columns import Column
from featurestore.values.status import NOT_FOUND, NULL, OUTSIDE_TTL, PRESENT
from featurestore.values.strings import Utf8Array
from featurestore.values.timestamps import now_us


@dataclass(slots=True)
class FeatureValues:
    name: str
    dtype: DType
    column: Column
    status: np.ndarray  # uint8 Status per entity


# The order of the fixed-width types in the `fixed` matrix of a result: each type's outputs
# are one block of rows, so that a response writes a type's values with one copy.
FIXED_TYPES: tuple[DType, ...] = (Int64, Float64, Bool, Timestamp)


class Slots:
    """Where every value a selection's read computes is kept, worked out once per selection.

    refs: the outputs, in output order, then what only transforms read. Each ref has a
    status row (its position in refs); a fixed-width ref a row of the int64 `fixed` matrix
    (raw bits: a Float64 as its IEEE bits, a Bool as 0/1), the outputs first and grouped by
    type in FIXED_TYPES order; a String ref a row of the `strings` offsets, the outputs
    first. Missing values are zero (strings empty)."""

    def __init__(self, plan: Plan, selection: Selection):
        outputs = [o.ref for o in selection.outputs]
        self.names = tuple(o.name for o in selection.outputs)
        self.dtypes: dict[str, DType] = {o.ref: o.dtype for o in selection.outputs}
        for view, features in selection.views.items():
            for f in features:
                self.dtypes.setdefault(f"{view}:{f}", plan.views[view].dtype(f))
        for t in selection.transforms:
            self.dtypes.setdefault(t.name, t.output)
        self.refs = tuple(outputs) + tuple(r for r in self.dtypes if r not in set(outputs))
        self.n_outputs = len(outputs)
        self.status_row = {ref: i for i, ref in enumerate(self.refs)}
        by_type = [[r for r in outputs if self.dtypes[r] is t] for t in FIXED_TYPES]
        order = [r for refs in by_type for r in refs]
        order += [r for r in self.refs[self.n_outputs:] if self.dtypes[r] is not String]
        self.fixed_row = {ref: i for i, ref in enumerate(order)}
        self.groups: list[tuple[DType, int, int]] = []  # (type, first row, end row) of outputs
        at = 0
        for t, refs in zip(FIXED_TYPES, by_type, strict=True):
            if refs:
                self.groups.append((t, at, at + len(refs)))
                at += len(refs)
        strings = [r for r in self.refs if self.dtypes[r] is String]  # outputs first
        self.string_row = {ref: i for i, ref in enumerate(strings)}
        self.n_string_outputs = sum(self.dtypes[r] is String for r in outputs)


@dataclass
class OnlineResult:
    """The values of one read, in the matrices Slots describes; `features` lists them as
    columns (tests, the synchronous store), the server encodes the matrices directly."""

    slots: Slots
    fixed: np.ndarray  # int64 (fixed refs, n)
    strings: Utf8Array  # `offsets` is (string refs, n + 1) over `data`
    computed: dict[str, Column]  # transforms' outputs
    status: np.ndarray  # uint8 (refs, n)
    row_views: tuple[str, ...]
    event_matrix: np.ndarray  # int64 (row views, n): the event time of the row served, 0 if none
    transform_errors: dict[str, int]

    @property
    def event_ts(self) -> dict[str, np.ndarray]:
        """Row view -> the event timestamp (micros) of the row served per entity, 0 if none."""
        return dict(zip(self.row_views, self.event_matrix, strict=True))

    def column(self, ref: str) -> Column:
        slots = self.slots
        if ref in self.computed:
            return self.computed[ref]
        valid = self.status[slots.status_row[ref]] == PRESENT
        valid.flags.writeable = False  # kernels take read-only inputs
        dtype = slots.dtypes[ref]
        if dtype is String:
            row = slots.string_row[ref]
            return Column(Utf8Array(self.strings.offsets[row], self.strings.data), valid)
        values = self.fixed[slots.fixed_row[ref]]
        if dtype is Float64:
            values = values.view(np.float64)
        elif dtype is Bool:
            values = values != 0
        values.flags.writeable = False  # a view: `fixed` itself stays writable
        return Column(values, valid)

    __getitem__ = column  # run_transforms reads and writes the result as a mapping

    def __setitem__(self, ref: str, column: Column) -> None:
        """A transform's values: kept as a column, and, where the ref has a fixed row,
        written there with missing values zeroed."""
        self.computed[ref] = column
        computed_status(column.valid, self.status[self.slots.status_row[ref]])
        values = column.values
        if isinstance(values, Utf8Array):  # rare (a String transform): appended to `strings`
            text = Utf8Array.from_list([v if ok else "" for v, ok in zip(
                values.to_list(), column.valid.tolist(), strict=True)])
            offsets = self.strings.offsets
            offsets[self.slots.string_row[ref]] = text.offsets + len(self.strings.data)
            self.strings = Utf8Array(offsets, np.concatenate([self.strings.data, text.data]))
        else:
            np.copyto(self.fixed[self.slots.fixed_row[ref]], values.view(np.int64)
                      if values.dtype == np.float64 else values, where=column.valid)

    @property
    def features(self) -> list[FeatureValues]:
        slots = self.slots
        return [FeatureValues(name, slots.dtypes[ref], self.column(ref), self.status[i])
                for i, (name, ref) in enumerate(zip(slots.names, slots.refs, strict=False))]


@dataclass(frozen=True)
class RowView:
    """A row view a selection reads: the served version and storage, and its features wanted."""

    view: ViewPlan
    storage: str
    created_us: int  # the storage's oldest write: keys of a ttl view expire from then on
    wanted: tuple[str, ...]
    token: str | None = None  # a cluster's slot markers' token when the storage was created


@dataclass(frozen=True)
class WindowView:
    """A windowed view a selection reads: its storage, hop groups and the aggregates wanted."""

    view: ViewPlan
    storage: str
    end_us: int  # END of the materialization that wrote the storage
    groups: tuple[TileGroup, ...]
    wanted: frozenset[str]


@dataclass(frozen=True)
class GroupOutputs:
    """Where a hop group's wanted aggregates go in a result, so that a read writes them all
    with a few array operations (a column each cost more than the merge at batch 1)."""

    aggregations: np.ndarray  # int64: positions in the group's layout of the wanted ones
    bools: np.ndarray  # bool per wanted: a Bool result (stored 0/1)
    fixed_rows: np.ndarray  # int64 per wanted: its row of `fixed`
    status_rows: np.ndarray  # int64 per wanted: its row of `status`

    @classmethod
    def of(cls, window: WindowView, g: TileGroup, slots: Slots) -> GroupOutputs:
        wanted = [(a, agg) for a, agg in enumerate(g.layout.aggregations)
                  if agg.name in window.wanted]
        refs = [f"{window.view.name}:{agg.name}" for _, agg in wanted]
        return cls(np.array([a for a, _ in wanted], np.int64),
                   np.array([agg.output is Bool for _, agg in wanted], np.bool_),
                   np.array([slots.fixed_row[r] for r in refs], np.int64),
                   np.array([slots.status_row[r] for r in refs], np.int64))

    def write(self, result: OnlineResult, out_i: np.ndarray, valid: np.ndarray) -> None:
        """The merge's outputs into the result's rows: values where valid (zero elsewhere),
        status PRESENT or NULL."""
        a, ok = self.aggregations, valid[self.aggregations]
        bits = out_i[a]  # (a copy: a is an index array) the bits of floats and ints alike
        bits[self.bools] = bits[self.bools] != 0
        result.fixed[self.fixed_rows] = np.where(ok, bits, 0)
        result.status[self.status_rows] = np.where(ok, PRESENT, NULL)


def _row_maps(rows: tuple[RowView, ...], slots: Slots
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What _gather needs of the row views, as arrays: per view its row layout, ttl and
    whether the created time delays visibility; per wanted fixed-width feature (view, index
    in the row, position among the fixed values, fixed row, status row); per wanted string
    (view, index, position among the strings, string row, status row)."""
    views, fixed, strings = [], [], []
    for v, row in enumerate(rows):
        schema = RowSchema(row.view.features)
        ttl = row.view.ttl_us
        views.append((len(schema.features), schema.bitmap_bytes, len(schema.fixed),
                      len(schema.strings), -1 if ttl is None else ttl, row.view.created_hides))
        index = {f: i for i, (f, _) in enumerate(schema.features)}
        for feature in row.wanted:
            ref, i = f"{row.view.name}:{feature}", index[feature]
            if ref in slots.string_row:
                strings.append((v, i, schema.position[i], slots.string_row[ref],
                                slots.status_row[ref]))
            else:
                fixed.append((v, i, schema.position[i], slots.fixed_row[ref],
                              slots.status_row[ref]))
    return (np.array(views, np.int64).reshape(-1, 6), np.array(fixed, np.int64).reshape(-1, 5),
            np.array(strings, np.int64).reshape(-1, 5))


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
                rows.append(RowView(view, storage, served[name].created_us or 0, tuple(wanted),
                                    served[name].token))
        self.rows, self.windows = tuple(rows), tuple(windows)
        self.row_views = tuple(r.view.name for r in rows)
        self.slots = Slots(plan, selection)
        self._maps = _row_maps(self.rows, self.slots)
        self._outputs = tuple(tuple(GroupOutputs.of(w, g, self.slots) for g in w.groups)
                              for w in self.windows)
        views = (*self.rows, *self.windows)
        self.fence = [active_key(project, item.view.name) for item in views] + [
            fresh_key(project, w.view.name, w.storage) for w in self.windows]
        self._storages = [item.storage.encode() for item in views]

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
        keys, view after view, then every windowed view's keys: per hop group, the window
        keys entity after entity, then their push keys."""
        n = len(next(iter(entities.values())))
        texts = {k: key_text(column) for k, column in entities.items()}  # shared by views
        keys: list[str] = list(self.fence)
        bases: dict[str, list[str]] = {}
        for views, windowed in ((self.rows, False), (self.windows, True)):
            for item in views:
                v = item.view
                bases[v.name] = entity_bases(self.project, v.name, item.storage, v.entity,
                                             [texts[k] for k, _ in v.join_keys], windowed)
        for row in self.rows:
            keys += bases[row.view.name]
        for window in self.windows:
            for g in window.groups:
                windows = [window_key(base, g.hop_us) for base in bases[window.view.name]]
                keys += windows
                keys += [push_key(k) for k in windows]
        return PendingRead(self, n, as_of_us, keys)


class PendingRead:
    """One read in progress, one round trip over any Redis client:

        read = lookup.start(entities, as_of)
        result = read.finish(MGET(read.keys), requests)

    The first keys are the fence: `finish` raises RegistryMoved or OnlineDataLost unless
    they still name the storages the lookup reads, so a flip or a Redis that lost its data
    is never read as values."""

    def __init__(self, lookup: Lookup, n: int, as_of_us: int, keys: list[str]):
        self.lookup, self.n, self.as_of_us, self.keys = lookup, n, as_of_us, keys

    def check_fence(self, values: list[bytes | None]) -> None:
        """`Lookup.check_fence` on the fence's values among a read's `values`."""
        self.lookup.check_fence(values[:len(self.lookup.fence)], self.as_of_us)

    def row_ranges(self) -> list[tuple[int, int, str | None]]:
        """(first, end, token): where each row view's keys lie in `keys`, and its storage's
        token (a Redis Cluster reads the slot markers with them, online/cluster.py)."""
        at, n = len(self.lookup.fence), self.n
        return [(at + i * n, at + (i + 1) * n, row.token)
                for i, row in enumerate(self.lookup.rows)]

    def finish(self, values: list[bytes | None], requests: dict[str, Column]) -> OnlineResult:
        fence = len(self.lookup.fence)
        self.lookup.check_fence(values[:fence], self.as_of_us)
        values = values[fence:]
        n, as_of_us = self.n, self.as_of_us
        lookup = self.lookup
        rows, slots = lookup.rows, lookup.slots
        views, fixed_map, string_map = lookup._maps
        stored = values[:len(rows) * n]
        lengths = np.array([-1 if v is None else len(v) for v in stored], np.int64)
        buffer = np.frombuffer(b"".join(filter(None, stored)), np.uint8)  # drops the None
        fixed, status, offsets, data, event_ts, newer, latest, missing = _gather(
            buffer, lengths, n, views, fixed_map, string_map, len(slots.fixed_row),
            len(slots.string_row), len(slots.refs), as_of_us)
        for v, row in enumerate(rows):
            if newer[v]:
                raise PastReadRefused(
                    f"feature view {row.view.name!r} cannot be read online as of {as_of_us}: "
                    f"it holds rows of {newer[v]} of these entities that became visible later; "
                    f"the earliest as_of it answers exactly for them is {latest[v]}; read "
                    "older values from a training set")
            if missing[v]:
                _check_expiry(row, as_of_us)
        result = OnlineResult(slots, fixed, Utf8Array(offsets, data), {}, status,
                              lookup.row_views, event_ts, {})
        at = len(rows) * n
        for window, outputs in zip(lookup.windows, lookup._outputs, strict=True):
            for g, output in zip(window.groups, outputs, strict=True):
                layout, name = g.layout, window.view.name
                buf, offsets = _joined(stored_values(values[at:at + n],
                                                     values[at + n:at + 2 * n]))
                at += 2 * n
                out_i, out_f, valid = empty_outputs(layout, n)
                ahead = merge_windows(*layout.merging, g.coarse, as_of_us // g.hop_us, as_of_us,
                                      buf, offsets, n, g.span, out_i, out_f, valid)
                if ahead:
                    raise OnlineStoreError(
                        f"feature view {name!r}: {ahead} stored tiles hold events after as_of "
                        f"{as_of_us}, which its fence should have refused; run `featurestore "
                        "materialize`")
                output.write(result, out_i, valid)
        result.transform_errors = run_transforms(lookup.selection, result, requests)
        return result


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


@numba.njit(cache=True, nogil=True, inline="always")
def _non_null(buffer, row, f):  # type: ignore[no-untyped-def]
    """Whether feature f of the row whose validity bitmap starts at `row` holds a value."""
    return (buffer[row + f // 8] >> (f % 8)) & 1


@numba.njit(cache=True, nogil=True)
def _gather(buffer, lengths, n, views, fixed_map, string_map, n_fixed, n_strings, n_refs,
            as_of_us):  # type: ignore[no-untyped-def]
    """Every row view's rows (one value per view and entity in `buffer`, `lengths` -1 where
    a key was missing) decoded straight into the result's matrices (see Slots and
    _row_maps), with each value's status: NOT_FOUND without a row, OUTSIDE_TTL when the
    row's event is older than as_of - ttl (ttl < 0: none), else PRESENT, or NULL for a null
    value; the same rule the offline join states in SQL. Missing values stay zero, strings
    empty. Also per view: how many rows became visible after as_of and the latest such time
    (a past read those rows cannot answer), and whether any key was missing."""
    n_views = views.shape[0]
    fixed = np.zeros((n_fixed, n), np.int64)
    status = np.zeros((n_refs, n), np.uint8)
    offsets = np.zeros((n_strings, n + 1), np.int64)
    data = np.empty(buffer.shape[0], np.uint8)
    event_ts = np.zeros((n_views, n), np.int64)
    newer = np.zeros(n_views, np.int64)
    latest = np.zeros(n_views, np.int64)
    missing = np.zeros(n_views, np.bool_)
    starts = np.empty(n_views * n, np.int64)
    state = np.empty(n_views * n, np.uint8)
    p = 0
    for i in range(n_views * n):
        v = i // n
        starts[i] = p
        if lengths[i] < 0:
            missing[v] = True
            state[i] = NOT_FOUND
            continue
        p += lengths[i]
        ts = int64_at(buffer, starts[i])
        seen = max(ts, int64_at(buffer, starts[i] + 8)) if views[v, 5] else ts
        event_ts[v, i % n] = ts
        if seen > as_of_us:
            newer[v] += 1
            latest[v] = max(latest[v], seen)
        ttl = views[v, 4]
        state[i] = OUTSIDE_TTL if ttl >= 0 and ts < as_of_us - ttl else PRESENT
    for w in range(fixed_map.shape[0]):
        v, f, position, row, status_row = fixed_map[w]
        for r in range(n):
            i = v * n + r
            s = state[i]
            if s == PRESENT:
                q = starts[i] + HEADER_BYTES
                if _non_null(buffer, q, f):
                    fixed[row, r] = int64_at(buffer, q + views[v, 1] + 8 * position)
                else:
                    s = NULL
            status[status_row, r] = s
    total = 0
    for w in range(string_map.shape[0]):
        v, f, position, row, status_row = string_map[w]
        offsets[row, 0] = total
        for r in range(n):
            i = v * n + r
            s = state[i]
            if s == PRESENT:
                q = starts[i] + HEADER_BYTES
                if _non_null(buffer, q, f):
                    q += views[v, 1] + 8 * views[v, 2]
                    for _ in range(position):
                        q += 4 + uint32_at(buffer, q)
                    length = uint32_at(buffer, q)
                    data[total:total + length] = buffer[q + 4:q + 4 + length]
                    total += length
                else:
                    s = NULL
            status[status_row, r] = s
            offsets[row, r + 1] = total
    return fixed, status, offsets, data[:total], event_ts, newer, latest, missing
