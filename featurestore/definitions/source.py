"""Sources: where raw rows come from (Parquet or CSV files, or a DuckDB table)."""

from __future__ import annotations

from featurestore.definitions.base import caller_location, check_name
from featurestore.errors import DefinitionError

FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class Source:
    kind = "source"

    def __init__(
        self,
        name: str,
        *,
        path: str | None = None,
        table: str | None = None,
        timestamp: str,
        created: str | None = None,
        field_mapping: dict[str, str] | None = None,
        timezone: str | None = None,
        description: str = "",
    ):
        self.defined_at = caller_location()
        where = f"Source {name!r} (at {self.defined_at})"
        self.name = check_name("Source", name, self.defined_at)
        if (path is None) == (table is None):
            raise DefinitionError(f"{where}: give exactly one of path= (a file or glob) or table=")
        if path is not None:
            suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
            if suffix not in FILE_FORMATS:
                raise DefinitionError(
                    f"{where}: path {path!r} must end in .parquet, .pq or .csv"
                )
            self.format = FILE_FORMATS[suffix]
        else:
            self.format = "table"
        self.path = path
        self.table = table
        if not isinstance(timestamp, str) or not timestamp:
            raise DefinitionError(f"{where}: timestamp= must name the event-timestamp column")
        self.timestamp = timestamp
        self.created = created
        mapping = dict(field_mapping or {})
        for src_col, name_ in mapping.items():
            check_name(f"{where} field_mapping target for {src_col!r}", name_)
        self.field_mapping = mapping
        self.timezone = timezone
        self.description = description

    def __repr__(self) -> str:
        return f"Source({self.name!r}, {self.format}={self.path or self.table!r})"
