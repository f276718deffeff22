"""The feature catalog page (`featurestore ui`): services, views, features, freshness, value
distributions, parity and lineage, read-only, served locally."""

from featurestore.ui.server import serve

__all__ = ["serve"]
