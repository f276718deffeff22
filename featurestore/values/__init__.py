"""The values every layer exchanges: columns (a value array plus validity), UTF-8 string
arrays, statuses and timestamps. Light on purpose (NumPy and Arrow only, no Numba, DuckDB or
Redis), so the serving client can use them.

Imports definitions.types only."""
