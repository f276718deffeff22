"""The offline store on DuckDB: ingest, feature tables, training sets, analysts' SQL.

Imports plan/ and definitions/; never online/ or serving/."""

from featurestore.offline.store import ApplyResult, OfflineStore

__all__ = ["ApplyResult", "OfflineStore"]
