"""Definitions a scientist writes in a feature repo. Imports nothing of the engines:
plan/, offline/, online/ and serving/ import this package, never the other way round."""

from featurestore.definitions.collection import Definitions
from featurestore.definitions.entity import Entity
from featurestore.definitions.feature_view import Aggregate, FeatureRef, FeatureView, Field
from featurestore.definitions.service import FeatureService
from featurestore.definitions.source import Source
from featurestore.definitions.transform import Request, Transform, transform, transform_of

__all__ = [
    "Aggregate",
    "Definitions",
    "Entity",
    "FeatureRef",
    "FeatureService",
    "FeatureView",
    "Field",
    "Request",
    "Source",
    "Transform",
    "transform",
    "transform_of",
]
