"""Feature value types, as imported in feature repos: `from featurestore.types import Int64`."""

from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp

__all__ = ["Bool", "DType", "Float64", "Int64", "String", "Timestamp"]
