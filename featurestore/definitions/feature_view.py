"""Feature views: typed features of one entity read from one source, with an optional ttl."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from featurestore.definitions.base import (
    RESERVED_NAMES,
    caller_location,
    check_dtype,
    check_name,
    did_you_mean,
    micros,
    parse_duration,
)
from featurestore.definitions.entity import Entity
from featurestore.definitions.functions import AGGREGATE_FUNCTIONS
from featurestore.definitions.source import Source
from featurestore.definitions.types import DType, Float64
from featurestore.errors import DefinitionError


class Field:
    def __init__(self, name: str, dtype: DType, description: str = ""):
        where = caller_location()
        self.name = check_name("Field", name, where)
        self.dtype = check_dtype(f"Field {name!r}", dtype, where)
        self.description = description

    def __repr__(self) -> str:
        return f"Field({self.name!r}, {self.dtype})"


class Aggregate:
    """A windowed aggregation of a source column: evaluated at T over the events with event
    time in [floor(T, hop) - window, T] that were visible at T. `dtype` is the column's type
    (Float64 unless given); the result's type follows from it and the function."""

    def __init__(
        self, column: str, function: str, *, window: str | timedelta, hop: str | timedelta,
        name: str | None = None, dtype: DType = Float64,
    ):
        where = caller_location()
        owner = f"Aggregate({column!r}, {function!r}) at {where}"
        self.column = check_name("Aggregate column", column, where)
        if function not in AGGREGATE_FUNCTIONS:
            raise DefinitionError(
                f"{owner}: unknown function {function!r}; use one of "
                + ", ".join(sorted(AGGREGATE_FUNCTIONS))
            )
        self.function = function
        self.dtype = check_dtype(owner, dtype, where)
        accepts = AGGREGATE_FUNCTIONS[function].accepts
        if self.dtype not in accepts:
            raise DefinitionError(
                f"{owner}: {function} cannot aggregate a {self.dtype} column; it takes "
                + ", ".join(t.name for t in accepts)
                + " (declare the column's type with dtype=)"
            )
        self.window = parse_duration(owner, window)
        self.hop = parse_duration(owner, hop)
        if micros(self.window) % micros(self.hop):
            raise DefinitionError(f"{owner}: hop {hop!r} must divide window {window!r} exactly")
        label = window if isinstance(window, str) else f"{int(self.window.total_seconds())}s"
        self.name = check_name("Aggregate", name or f"{column}_{function}_{label}", where)

    @property
    def output(self) -> DType:
        return AGGREGATE_FUNCTIONS[self.function].output(self.dtype)

    def __repr__(self) -> str:
        return f"Aggregate({self.name!r})"


@dataclass(frozen=True)
class FeatureRef:
    """One feature of a view, as used in transform inputs and feature services."""

    view: FeatureView
    feature: str

    @property
    def dtype(self) -> DType:
        f = self.view.field(self.feature)
        return f.output if isinstance(f, Aggregate) else f.dtype

    def __repr__(self) -> str:
        return f"{self.view.name}:{self.feature}"


class FeatureView:
    kind = "feature_view"

    def __init__(
        self,
        name: str,
        *,
        entity: Entity,
        source: Source,
        fields: list[Field] | tuple[Field, ...] = (),
        aggregates: list[Aggregate] | tuple[Aggregate, ...] = (),
        ttl: timedelta | str | None = None,
        online: bool = True,
        description: str = "",
    ):
        self.defined_at = caller_location()
        where = f"FeatureView {name!r} (at {self.defined_at})"
        self.name = check_name("FeatureView", name, self.defined_at)
        if not isinstance(entity, Entity):
            raise DefinitionError(f"{where}: entity= must be an Entity, got {entity!r}")
        if not isinstance(source, Source):
            raise DefinitionError(f"{where}: source= must be a Source, got {source!r}")
        self.entity, self.source = entity, source
        self.fields = list(fields)
        self.aggregates = list(aggregates)
        for f in self.fields:
            if not isinstance(f, Field):
                raise DefinitionError(f"{where}: fields= must hold Field objects, got {f!r}")
        for a in self.aggregates:
            if not isinstance(a, Aggregate):
                raise DefinitionError(
                    f"{where}: aggregates= must hold Aggregate objects, got {a!r}"
                )
        if not self.fields and not self.aggregates:
            raise DefinitionError(f"{where}: declare at least one Field or Aggregate")
        if self.fields and self.aggregates:
            raise DefinitionError(
                f"{where}: a view holds either fields= (latest values) or aggregates= "
                "(windowed aggregations), not both; split it into two views"
            )
        seen: set[str] = set()
        for feature in self.feature_names:
            if feature in seen:
                raise DefinitionError(f"{where}: feature {feature!r} is declared twice")
            if feature in entity.join_keys:
                raise DefinitionError(
                    f"{where}: feature {feature!r} has the name of a join key of entity "
                    f"{entity.name!r}; rename it (field_mapping on the source can help)"
                )
            if feature in RESERVED_NAMES:
                raise DefinitionError(
                    f"{where}: feature name {feature!r} is reserved; choose another name"
                )
            seen.add(feature)
        self.ttl = parse_duration(f"{where} ttl", ttl) if ttl is not None else None
        if self.ttl is not None and self.aggregates:
            raise DefinitionError(
                f"{where}: ttl= does not apply to windowed aggregations (each window bounds "
                "its events); remove it"
            )
        self.online = bool(online)
        self.description = description

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.fields] + [a.name for a in self.aggregates]

    def field(self, feature: str) -> Field | Aggregate:
        for f in [*self.fields, *self.aggregates]:
            if f.name == feature:
                return f
        raise DefinitionError(
            f"FeatureView {self.name!r} has no feature {feature!r}"
            f"{did_you_mean(feature, self.feature_names)}; it has "
            + ", ".join(self.feature_names)
        )

    def __getitem__(self, feature: str) -> FeatureRef:
        self.field(feature)
        return FeatureRef(self, feature)

    def __repr__(self) -> str:
        return f"FeatureView({self.name!r})"
