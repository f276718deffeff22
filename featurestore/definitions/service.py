"""Feature services: the named, model-facing list of features a model consumes."""

from __future__ import annotations

from typing import Any

from featurestore.definitions.base import caller_location, check_name
from featurestore.definitions.feature_view import FeatureRef, FeatureView
from featurestore.definitions.transform import Transform, transform_of
from featurestore.errors import DefinitionError


class FeatureService:
    kind = "feature_service"

    def __init__(self, name: str, features: list[Any], description: str = ""):
        self.defined_at = caller_location()
        self.name = check_name("FeatureService", name, self.defined_at)
        # Strings ('view', 'view:field' or a transform's name) are resolved by the repo loader.
        items: list[FeatureView | FeatureRef | Transform | str] = []
        for item in features:
            t = transform_of(item)
            if t is not None:
                items.append(t)
            elif isinstance(item, FeatureView | FeatureRef | str):
                items.append(item)
            else:
                raise DefinitionError(
                    f"FeatureService {name!r} (at {self.defined_at}): {item!r} is not a feature "
                    "view, a feature such as view['field'] or 'view:field', or a @transform function"
                )
        if not items:
            raise DefinitionError(f"FeatureService {name!r} (at {self.defined_at}) is empty")
        self.features = items
        self.description = description

    def __repr__(self) -> str:
        return f"FeatureService({self.name!r})"
