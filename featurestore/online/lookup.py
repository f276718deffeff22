"""The online executor for one feature selection: which keys to read, and how the rows read
become feature values and statuses. It does no I/O, so the gRPC server (async) and any
synchronous caller share it; between `keys()` and `assemble()` the caller does one MGET."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from featurestore.definitions.types import DType
from featurestore.errors import NotAppliedError
from featurestore.online.codec import RowSchema, decode
from featurestore.online.keys import entity_tags, key_text, view_prefix
from featurestore.plan import Column, Plan, Selection
from featurestore.plan.execute import run_transforms
from featurestore.plan.status import NOT_FOUND, NULL, OUTSIDE_TTL, PRESENT


@dataclass(frozen=True)
class ServedView:
    """The materialized version of a view that lookups read."""

    name: str
    version: str
    entity: str
    join_keys: tuple[tuple[str, DType], ...]
    features: tuple[tuple[str, DType], ...]
    ttl_us: int | None


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
            self.views.append((view, RowSchema(view.features),
                               view_prefix(project, name, view.version),
                               [(f"{name}:{f}", index[f]) for f in wanted],
                               np.array([index[f] for f in wanted], np.int64)))

    def keys(self, entities: dict[str, Column]) -> list[str]:
        """Every view's keys for the batch, view after view."""
        out: list[str] = []
        texts = {k: key_text(column) for k, column in entities.items()}  # shared by views
        for view, _, prefix, _, _ in self.views:
            tags = entity_tags(view.entity, [texts[k] for k, _ in view.join_keys])
            out += [prefix + tag for tag in tags]
        return out

    def assemble(self, values: list[bytes | None], n: int, requests: dict[str, Column],
                 as_of_us: int) -> OnlineResult:
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
        errors = run_transforms(self.selection, columns, statuses, requests)
        return OnlineResult(
            [FeatureValues(o.name, o.dtype, columns[o.ref], statuses[o.ref])
             for o in self.selection.outputs], event_ts, errors)


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
