"""The Plan: every definition of a repo, hashed and compiled, and the single description both
executors work from. Offline and online code ask the Plan which views, columns and kernels a
request needs; neither re-derives that from the definitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurestore.definitions import Definitions, FeatureRef, FeatureView, Request, Transform
from featurestore.definitions.base import micros
from featurestore.definitions.types import DType, Timestamp, dtype_by_name
from featurestore.errors import DefinitionError, SourceDataError, UnknownNameError
from featurestore.plan.hashing import content_hash, function_code, version_of
from featurestore.plan.kernels import Kernel, compile_kernel
from featurestore.plan.python_kernel import PythonKernel


@dataclass(frozen=True)
class EntityPlan:
    name: str
    join_keys: tuple[tuple[str, DType], ...]
    hash: str


@dataclass(frozen=True)
class SourcePlan:
    name: str
    format: str  # parquet | csv | table
    path: str | None
    table: str | None
    timestamp: str
    created: str | None
    field_mapping: tuple[tuple[str, str], ...]
    timezone: str | None
    hash: str
    created_role: str = "visibility"  # see definitions.source.CREATED_ROLES

    @property
    def created_hides(self) -> bool:
        """Whether a row stays hidden until its created time (not only when it ties)."""
        return self.created is not None and self.created_role == "visibility"


@dataclass(frozen=True)
class AggregatePlan:
    name: str
    column: str
    function: str
    dtype: DType  # the column's
    output: DType
    window_us: int
    hop_us: int


@dataclass(frozen=True)
class ViewPlan:
    name: str
    entity: str
    join_keys: tuple[tuple[str, DType], ...]
    source: str
    features: tuple[tuple[str, DType], ...]
    ttl_us: int | None
    online: bool
    hash: str
    aggregates: tuple[AggregatePlan, ...] = ()  # a windowed view's features, in order
    created_hides: bool = True  # its source's SourcePlan.created_hides (online lookups read it)

    @property
    def windowed(self) -> bool:
        return bool(self.aggregates)

    @property
    def reads(self) -> tuple[tuple[str, DType], ...]:
        """The source columns the view reads besides its keys and timestamps."""
        if self.aggregates:
            return tuple({a.column: a.dtype for a in self.aggregates}.items())
        return self.features

    @property
    def version(self) -> str:
        return version_of(self.hash)

    def dtype(self, feature: str) -> DType:
        return dict(self.features)[feature]

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> ViewPlan:
        """The inverse of `describe` (reads what an online registry stored)."""
        def pairs(items: list[list[str]]) -> tuple[tuple[str, DType], ...]:
            return tuple((name, dtype_by_name(t)) for name, t in items)
        aggregates = tuple(AggregatePlan(**{**a, "dtype": dtype_by_name(a["dtype"]),
                                            "output": dtype_by_name(a["output"])})
                           for a in d["aggregates"])
        return cls(d["name"], d["entity"], pairs(d["join_keys"]), d["source"],
                   pairs(d["features"]), d["ttl_us"], d["online"], d["hash"], aggregates,
                   d.get("created_hides", True))


@dataclass(frozen=True)
class InputPlan:
    param: str
    kind: str  # request | feature | transform
    ref: str  # request name, 'view:feature', or transform name
    dtype: DType
    default: Any


@dataclass
class TransformPlan:
    name: str
    inputs: tuple[InputPlan, ...]
    output: DType
    code: str
    hash: str
    compiled: bool = True  # False: run as plain Python, row by row (PythonKernel)
    kernel: Kernel | PythonKernel | None = field(default=None, repr=False, compare=False)

    @property
    def version(self) -> str:
        return version_of(self.hash)


@dataclass(frozen=True)
class ServicePlan:
    name: str
    features: tuple[str, ...]  # 'view:feature' or a transform name, in output order
    hash: str


@dataclass(frozen=True)
class OutputFeature:
    name: str
    dtype: DType
    ref: str  # 'view:feature' or a transform name


@dataclass
class Selection:
    """What a training set or an online lookup must compute for a list of features."""

    outputs: list[OutputFeature]
    views: dict[str, list[str]]  # view -> its features to read, in declaration order
    transforms: list[TransformPlan]  # in dependency order
    requests: dict[str, DType]
    join_keys: dict[str, DType]


@dataclass
class Plan:
    project: str
    entities: dict[str, EntityPlan]
    sources: dict[str, SourcePlan]
    views: dict[str, ViewPlan]
    transforms: dict[str, TransformPlan]
    services: dict[str, ServicePlan]

    def definitions(self) -> dict[tuple[str, str], str]:
        """(kind, name) -> content hash, for every definition."""
        kinds = {"entity": self.entities, "source": self.sources, "feature_view": self.views,
                 "transform": self.transforms, "feature_service": self.services}
        return {(kind, name): d.hash for kind, table in kinds.items() for name, d in table.items()}

    def select(self, service: str | None = None, features: list[str] | None = None) -> Selection:
        if (service is None) == (features is None):
            raise UnknownNameError("give exactly one of service= or features=")
        if service is not None:
            if service not in self.services:
                raise UnknownNameError(
                    f"unknown feature service {service!r}; known services: "
                    + (", ".join(sorted(self.services)) or "none (run `featurestore apply`)")
                )
            refs = list(self.services[service].features)
        else:
            refs = [r for f in features or [] for r in self._expand(f)]
            if not refs:
                raise UnknownNameError("features= is empty; name at least one feature")
        return self._selection(refs, f"service {service!r}" if service else "features")

    def _expand(self, ref: str) -> list[str]:
        if ":" in ref:
            view, feature = ref.split(":", 1)
            if view not in self.views or feature not in dict(self.views[view].features):
                raise UnknownNameError(f"unknown feature {ref!r}; see `featurestore list`")
            return [ref]
        if ref in self.views:
            return [f"{ref}:{name}" for name, _ in self.views[ref].features]
        if ref in self.transforms:
            return [ref]
        raise UnknownNameError(
            f"unknown feature {ref!r}: write 'view:feature', a view name or a transform name "
            "(see `featurestore list`)"
        )

    def _selection(self, refs: list[str], owner: str) -> Selection:
        outputs: list[OutputFeature] = []
        views: dict[str, set[str]] = {}
        ordered: list[TransformPlan] = []
        requests: dict[str, DType] = {}

        def need_transform(name: str) -> None:
            t = self.transforms[name]
            if t in ordered:
                return
            for inp in t.inputs:
                if inp.kind == "transform":
                    need_transform(inp.ref)
                elif inp.kind == "feature":
                    view, feature = inp.ref.split(":", 1)
                    views.setdefault(view, set()).add(feature)
                else:
                    requests[inp.ref] = inp.dtype
            ordered.append(t)

        for ref in refs:
            if ":" in ref:
                view, feature = ref.split(":", 1)
                views.setdefault(view, set()).add(feature)
                outputs.append(OutputFeature(feature, self.views[view].dtype(feature), ref))
            else:
                need_transform(ref)
                outputs.append(OutputFeature(ref, self.transforms[ref].output, ref))
        join_keys: dict[str, DType] = {}
        for view in views:
            join_keys.update(self.views[view].join_keys)
        _check_output_names(owner, outputs, requests, join_keys)
        return Selection(
            outputs=outputs,
            views={v: [f for f, _ in self.views[v].features if f in wanted]
                   for v, wanted in views.items()},
            transforms=ordered,
            requests=requests,
            join_keys=join_keys,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of every definition (kernels excluded): the registry's,
        the golden test's."""
        return {
            "project": self.project,
            "entities": {n: describe(e) for n, e in sorted(self.entities.items())},
            "sources": {n: describe(s) for n, s in sorted(self.sources.items())},
            "feature_views": {n: describe(v) for n, v in sorted(self.views.items())},
            "transforms": {n: describe(t) for n, t in sorted(self.transforms.items())},
            "feature_services": {n: describe(s) for n, s in sorted(self.services.items())},
        }


def describe(definition: Any) -> dict[str, Any]:
    """The one serialized form of a compiled definition: every field as plain JSON (types by
    name, kernels left out) plus its version. The offline registry, the online registry and
    the golden plan all store this; `ViewPlan.from_description` reads it back."""
    out = {name: _plain(value) for name, value in vars(definition).items() if name != "kernel"}
    out["version"] = version_of(definition.hash)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, DType):
        return value.name
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, InputPlan | AggregatePlan):
        return {k: _plain(v) for k, v in vars(value).items()}
    return value


def declared_columns(plan: Plan, src: SourcePlan, pushed: bool = False
                     ) -> dict[str, tuple[DType, str]]:
    """Column -> (type, who declares it) for every column some view reads from this source:
    what ingest checks in its files and a push in its batches (`pushed`: without the created
    column, since a pushed event's created time is its ingest time)."""
    out: dict[str, tuple[DType, str]] = {src.timestamp: (Timestamp, "timestamp=")}
    if src.created and not pushed:
        out[src.created] = (Timestamp, "created=")
    for view in plan.views.values():
        if view.source != src.name:
            continue
        for column, dtype in (*view.join_keys, *view.reads):
            owner = f"FeatureView {view.name!r}"
            seen = out.setdefault(column, (dtype, owner))
            if seen[0] != dtype:
                raise SourceDataError(
                    f"Source {src.name!r}: column {column!r} is read as {dtype} by {owner} but "
                    f"as {seen[0]} by {seen[1]}; declare one type"
                )
    return out


def _check_output_names(
    owner: str, outputs: list[OutputFeature], requests: dict[str, DType],
    join_keys: dict[str, DType],
) -> None:
    seen: dict[str, str] = {}
    for out in outputs:
        if out.name in seen:
            raise DefinitionError(
                f"{owner}: two features are named {out.name!r} ({seen[out.name]} and {out.ref}); "
                "a training set needs unique column names, so select only one of them"
            )
        seen[out.name] = out.ref
    for name in requests:
        if name in seen or name in join_keys:
            raise DefinitionError(
                f"{owner}: request input {name!r} has the name of a feature or join key; "
                "rename the Request"
            )


def build_plan(project: str, defs: Definitions, kernel_cache: Path | None) -> Plan:
    """Hash every definition and compile every transform into `kernel_cache` (Numba caches on
    disk); None hashes only."""
    entities = {
        e.name: EntityPlan(e.name, tuple(e.join_keys.items()),
                           content_hash({"kind": "entity", "name": e.name,
                                         "join_keys": [[k, t.name] for k, t in e.join_keys.items()]}))
        for e in defs.entities.values()
    }
    sources: dict[str, SourcePlan] = {}
    for s in defs.sources.values():
        mapping = tuple(sorted(s.field_mapping.items()))
        spec = {"kind": "source", "name": s.name, "format": s.format, "path": s.path,
                "table": s.table, "timestamp": s.timestamp, "created": s.created,
                "field_mapping": [list(p) for p in mapping], "timezone": s.timezone}
        if s.created_role != "visibility":  # absent by default, so older hashes stay
            spec["created_role"] = s.created_role
        sources[s.name] = SourcePlan(s.name, s.format, s.path, s.table, s.timestamp, s.created,
                                     mapping, s.timezone, content_hash(spec), s.created_role)
    views = {v.name: _view_plan(v, entities, sources) for v in defs.views.values()}
    transforms: dict[str, TransformPlan] = {}
    for t in defs.transforms.values():
        _transform_plan(t, views, transforms)
    services = {}
    for s in defs.services.values():
        refs = tuple(_ref(f) for item in s.features for f in _expand_definition(item))
        hashes = [[r, views[r.split(":")[0]].hash if ":" in r else transforms[r].hash]
                  for r in refs]
        services[s.name] = ServicePlan(
            s.name, refs, content_hash({"kind": "feature_service", "name": s.name,
                                        "features": hashes}))
    plan = Plan(project, entities, sources, views, transforms, services)
    for s in defs.services.values():
        plan.select(service=s.name)  # name clashes inside a service fail at apply
    if kernel_cache is not None:
        for t in defs.transforms.values():
            tp = transforms[t.name]
            types, defaults = [i.dtype for i in tp.inputs], [i.default for i in tp.inputs]
            tp.kernel = compile_kernel(
                t.name, t.fn, types, tp.output, defaults, tp.version, kernel_cache,
                f"transform {t.name!r} (at {t.defined_at})") if t.compiled else PythonKernel(
                t.name, types, tp.output, defaults, t.fn)
    return plan


def _view_plan(v: FeatureView, entities: dict[str, EntityPlan],
               sources: dict[str, SourcePlan]) -> ViewPlan:
    aggregates = tuple(
        AggregatePlan(a.name, a.column, a.function, a.dtype, a.output, micros(a.window),
                      micros(a.hop)) for a in v.aggregates)
    features = tuple((f.name, f.dtype) for f in v.fields) + tuple(
        (a.name, a.output) for a in aggregates)
    ttl_us = micros(v.ttl) if v.ttl is not None else None
    spec: dict[str, Any] = {
        "kind": "feature_view", "name": v.name, "entity": entities[v.entity.name].hash,
        "source": sources[v.source.name].hash,
        "features": [[n, t.name] for n, t in features], "ttl_us": ttl_us}
    if aggregates:
        spec["aggregates"] = [[a.name, a.column, a.function, a.dtype.name, a.window_us,
                               a.hop_us] for a in aggregates]
    return ViewPlan(v.name, v.entity.name, entities[v.entity.name].join_keys, v.source.name,
                    features, ttl_us, v.online, content_hash(spec), aggregates,
                    sources[v.source.name].created_hides)


def _transform_plan(t: Transform, views: dict[str, ViewPlan],
                    done: dict[str, TransformPlan]) -> TransformPlan:
    if t.name in done:
        return done[t.name]
    inputs, spec_inputs = [], []
    for param, value in t.inputs.items():
        default = t.defaults.get(param)
        if isinstance(value, Request):
            inp = InputPlan(param, "request", value.name, value.dtype, default)
            upstream = ""
        elif isinstance(value, FeatureRef):
            inp = InputPlan(param, "feature", _ref(value), value.dtype, default)
            upstream = views[value.view.name].hash
        else:
            assert isinstance(value, Transform)
            up = _transform_plan(value, views, done)
            inp = InputPlan(param, "transform", up.name, up.output, default)
            upstream = up.hash
        inputs.append(inp)
        spec_inputs.append([param, inp.kind, inp.ref, inp.dtype.name, upstream, default])
    code = function_code(t.fn)
    spec = {"kind": "transform", "name": t.name, "inputs": spec_inputs,
            "output": t.output.name, "code": code}
    if not t.compiled:  # absent when compiled, so older hashes stay
        spec["compiled"] = False
    plan = TransformPlan(t.name, tuple(inputs), t.output, code, content_hash(spec), t.compiled)
    done[t.name] = plan
    return plan


def _expand_definition(item: Any) -> list[Any]:
    if isinstance(item, FeatureView):
        return [item[name] for name in item.feature_names]
    return [item]


def _ref(item: Any) -> str:
    if isinstance(item, FeatureRef):
        return f"{item.view.name}:{item.feature}"
    if isinstance(item, Transform):
        return item.name
    raise DefinitionError(f"cannot use {item!r} as a feature")

