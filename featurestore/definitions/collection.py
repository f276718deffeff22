"""All definitions of one repo, by kind and name: what the repo loader collects and the Plan
compiles."""

from __future__ import annotations

from dataclasses import dataclass, field

from featurestore.definitions.entity import Entity
from featurestore.definitions.feature_view import FeatureView
from featurestore.definitions.service import FeatureService
from featurestore.definitions.source import Source
from featurestore.definitions.transform import Transform


@dataclass
class Definitions:
    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    transforms: dict[str, Transform] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)
