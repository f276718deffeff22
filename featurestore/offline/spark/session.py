"""The Spark session the engine runs in, with the settings its SQL relies on."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from featurestore.errors import FeatureStoreError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Settings every query of the engine relies on, applied to a session found already running too.
SQL_SETTINGS = {
    "spark.sql.session.timeZone": "UTC",
    # identifiers are quoted as in DuckDB, so both engines share the semantics' SQL helpers
    "spark.sql.ansi.doubleQuotedIdentifiers": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # timestamps are proleptic Gregorian micros, as in DuckDB and Arrow: never rebased
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
}


def spark_session(master: str) -> SparkSession:
    """The process's Spark session (a running one is reused whatever its master, so a caller
    may start its own first); its executors run this interpreter's Python unless
    PYSPARK_PYTHON says otherwise."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise FeatureStoreError(
            "offline_engine: spark needs pyspark: pip install 'featurestore[spark]' (or set "
            "offline_engine: duckdb)") from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.appName("featurestore").master(master)
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in SQL_SETTINGS.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # no Java, or no master at that URL
        raise FeatureStoreError(
            f"cannot start Spark with spark_master {master!r}: {exc}; Spark needs Java 17+ "
            "(Debian: openjdk-17-jre-headless, `make java`) and a reachable master "
            "(spark_master in featurestore.yaml)") from None
    for key, value in SQL_SETTINGS.items():
        spark.conf.set(key, value)
    return spark
