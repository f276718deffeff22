"""featurestore: features defined once in Python, compiled once with Numba, identical in
training and serving. This module only re-exports the public names, each loaded from its
module on first use (PEP 562), so that `from featurestore import Client` (a serving system's
import) loads the client and what it needs, and no DuckDB, Numba or Redis."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from featurestore.definitions import (
        Aggregate,
        Entity,
        FeatureService,
        FeatureView,
        Field,
        Request,
        Source,
        transform,
    )
    from featurestore.errors import FeatureStoreError
    from featurestore.feature_store import FeatureStore
    from featurestore.serving.client import Client

_DEFINITIONS = "featurestore.definitions"
_MODULES = {  # public name -> the module it is loaded from
    "Aggregate": _DEFINITIONS,
    "Client": "featurestore.serving.client",
    "Entity": _DEFINITIONS,
    "FeatureService": _DEFINITIONS,
    "FeatureStore": "featurestore.feature_store",
    "FeatureStoreError": "featurestore.errors",
    "FeatureView": _DEFINITIONS,
    "Field": _DEFINITIONS,
    "Request": _DEFINITIONS,
    "Source": _DEFINITIONS,
    "transform": _DEFINITIONS,
}

__all__ = [
    "Aggregate",
    "Client",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureView",
    "Field",
    "Request",
    "Source",
    "transform",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'featurestore' has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(_MODULES[name]), name)  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
