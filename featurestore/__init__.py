"""featurestore: features defined once in Python, compiled once with Numba, identical in
training and serving. This module only re-exports the public names. FeatureStore is loaded
on first use, so that `from featurestore import Client` (a serving system's import) loads no
DuckDB, Numba or Redis."""

from typing import TYPE_CHECKING, Any

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
from featurestore.serving.client import Client

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


if TYPE_CHECKING:
    from featurestore.feature_store import FeatureStore


def __getattr__(name: str) -> Any:
    if name == "FeatureStore":
        from featurestore.feature_store import FeatureStore

        return FeatureStore
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")
