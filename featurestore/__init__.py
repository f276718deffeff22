"""featurestore: features defined once in Python, compiled once with Numba, identical in
training and serving. This module only re-exports the public names."""

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
