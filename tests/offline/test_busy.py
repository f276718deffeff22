"""A second process touching the offline store while one holds it gets a clear error naming
the holder, not a raw DuckDB lock error, and the store is usable again once it is released."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from repo_kit import write_repo

from featurestore import FeatureStore
from featurestore.errors import OfflineStoreBusy

HOLD = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_store_held_by_another_process_is_reported_with_its_pid(tmp_path: Path) -> None:
    root = write_repo(tmp_path)
    store = FeatureStore(root)
    store.apply()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store.config.offline_store)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(OfflineStoreBusy, match=rf"in use by another process \(PID "
                                                   rf"{holder.pid}\).*another `featurestore "
                                                   "apply`"):
            FeatureStore(root).apply()
    finally:
        holder.communicate("")  # closes stdin: the holder exits and releases the file
    FeatureStore(root).apply()  # usable again
