"""The Spark offline engine (`offline_engine: spark`): feature tables and training sets built
by Spark jobs over the sources' files, with the same kernels and the same point-in-time rules
as the DuckDB engine, so both give the same bits. pyspark is imported only when used."""

from featurestore.offline.spark.engine import SparkOffline

__all__ = ["SparkOffline"]
