"""Entities: the things features describe, identified by one or more typed join keys."""

from __future__ import annotations

from featurestore.definitions.base import caller_location, check_dtype, check_name
from featurestore.definitions.types import KEY_TYPES, DType
from featurestore.errors import DefinitionError


class Entity:
    kind = "entity"

    def __init__(self, name: str, join_keys: dict[str, DType], description: str = ""):
        self.defined_at = caller_location()
        self.name = check_name("Entity", name, self.defined_at)
        if not isinstance(join_keys, dict) or not join_keys:
            raise DefinitionError(
                f"Entity {name!r} (at {self.defined_at}): join_keys must be a non-empty dict "
                "such as {'user_id': Int64}"
            )
        for key, dtype in join_keys.items():
            check_name(f"Entity {name!r} join key", key, self.defined_at)
            check_dtype(f"Entity {name!r} join key {key!r}", dtype, self.defined_at)
            if dtype not in KEY_TYPES:
                raise DefinitionError(
                    f"Entity {name!r} (at {self.defined_at}): join key {key!r} has type {dtype}; "
                    "join keys must be Int64 or String"
                )
        self.join_keys: dict[str, DType] = dict(join_keys)
        self.description = description

    def __repr__(self) -> str:
        return f"Entity({self.name!r}, join_keys={self.join_keys})"
