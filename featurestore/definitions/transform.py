"""Request-time inputs and transforms: plain Python functions, compiled by the Plan (or, with
`compiled=False`, run as plain Python by the same executor, row by row and slower).

`@transform` attaches a `Transform` to the function and hands the function back unchanged,
so a transform stays callable in a notebook or a unit test."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from featurestore.definitions.base import caller_location, check_dtype, check_name
from featurestore.definitions.feature_view import FeatureRef
from featurestore.definitions.types import DType
from featurestore.errors import DefinitionError

ATTRIBUTE = "__featurestore_transform__"


class Request:
    """A value the caller supplies with each request (a label column in training sets)."""

    def __init__(self, name: str, dtype: DType):
        where = caller_location()
        self.name = check_name("Request", name, where)
        self.dtype = check_dtype(f"Request {name!r}", dtype, where)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.name, self.dtype) == (other.name, other.dtype)

    def __hash__(self) -> int:
        return hash((self.name, self.dtype))

    def __repr__(self) -> str:
        return f"Request({self.name!r}, {self.dtype})"


class Transform:
    kind = "transform"

    def __init__(
        self,
        fn: Callable[..., Any],
        inputs: dict[str, Request | FeatureRef | Transform | str],
        output: DType,
        defaults: dict[str, Any],
        name: str,
        compiled: bool = True,
    ):
        self.fn = fn
        self.defined_at = caller_location(3)
        where = f"transform {name!r} (at {self.defined_at})"
        self.name = check_name("transform", name, self.defined_at)
        self.output = check_dtype(f"{where} output", output, self.defined_at)
        params = list(inspect.signature(fn).parameters)
        if not isinstance(inputs, dict) or sorted(params) != sorted(inputs):
            raise DefinitionError(
                f"{where}: inputs= must map each parameter of {fn.__name__}({', '.join(params)}) "
                f"to a Request, a feature such as view['field'], or another transform; "
                f"got keys {sorted(inputs) if isinstance(inputs, dict) else inputs!r}"
            )
        # Strings ('view:field' or a transform's name) are resolved when the repo is loaded.
        resolved: dict[str, Request | FeatureRef | Transform | str] = {}
        for param in params:
            value = inputs[param]
            if callable(value) and hasattr(value, ATTRIBUTE):
                value = getattr(value, ATTRIBUTE)
            if not isinstance(value, Request | FeatureRef | Transform | str):
                raise DefinitionError(
                    f"{where}: input {param!r} is {value!r}; use Request(name, type), "
                    "view['field'], 'view:field', or another @transform function"
                )
            resolved[param] = value
        self.inputs = resolved
        unknown = set(defaults) - set(params)
        if unknown:
            raise DefinitionError(f"{where}: defaults= names unknown inputs {sorted(unknown)}")
        self.defaults = dict(defaults)
        if not isinstance(compiled, bool):
            raise DefinitionError(f"{where}: compiled= is True or False, got {compiled!r}")
        self.compiled = compiled

    def input_dtype(self, param: str) -> DType:
        value = self.inputs[param]
        if isinstance(value, str):
            raise DefinitionError(f"transform {self.name!r}: input {param!r} is unresolved")
        return value.output if isinstance(value, Transform) else value.dtype

    def __repr__(self) -> str:
        return f"Transform({self.name!r})"


def transform(
    *,
    inputs: dict[str, Any],
    output: DType,
    defaults: dict[str, Any] | None = None,
    name: str | None = None,
    compiled: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a transform. A missing input (NULL, NOT_FOUND, OUTSIDE_TTL) makes the output
    NULL, unless `defaults` gives that input a value to use instead. `compiled=False` runs the
    function as plain Python, once per row, instead of compiling it with Numba: any Python
    (pandas, a Feast function), the same missing-input and error rules, many times slower;
    it may return None for a NULL."""

    def attach(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, ATTRIBUTE, Transform(fn, inputs, output, defaults or {},
                                         name or fn.__name__, compiled))
        return fn

    return attach


def transform_of(obj: object) -> Transform | None:
    """The Transform behind a decorated function (or the Transform itself), else None."""
    if isinstance(obj, Transform):
        return obj
    return getattr(obj, ATTRIBUTE, None) if callable(obj) else None
