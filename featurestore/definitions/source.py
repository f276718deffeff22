"""Sources: where raw rows come from (Parquet or CSV files, or a DuckDB table)."""

from __future__ import annotations

from featurestore.definitions.base import caller_location, check_name
from featurestore.errors import DefinitionError

FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
# What a source's created column means. "visibility": a row is visible from the later of its
# event and created times, and the created time breaks ties between equal event times.
# "tie_break" (Feast's created_timestamp_column): it only breaks ties, and never hides a row.
CREATED_ROLES = ("visibility", "tie_break")


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
        created_role: str = "visibility",
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
        if created_role not in CREATED_ROLES:
            raise DefinitionError(
                f"{where}: created_role={created_role!r} must be one of "
                + ", ".join(repr(r) for r in CREATED_ROLES))
        if created_role != "visibility" and not created:
            raise DefinitionError(f"{where}: created_role={created_role!r} needs created=")
        self.created_role = created_role
        mapping = dict(field_mapping or {})
        for src_col, name_ in mapping.items():
            check_name(f"{where} field_mapping target for {src_col!r}", name_)
        self.field_mapping = mapping
        self.timezone = timezone
        self.description = description

    def __repr__(self) -> str:
        return f"Source({self.name!r}, {self.format}={self.path or self.table!r})"
