"""What importing the client loads, checked in fresh processes: a serving system's
`from featurestore import Client` loads no engine (DuckDB, Numba, llvmlite, Redis) and none
of the DataFrame libraries the client uses only to convert results; `import featurestore`
loads none of its public names until they are used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import featurestore

ENGINES = ("duckdb", "numba", "llvmlite", "redis", "hiredis")
FRAMES = ("polars", "pyarrow")  # loaded by OnlineFeatures.to_polars/to_arrow and Client.push


def loaded_after(code: str) -> dict[str, list[str]]:
    """Runs `code` in a fresh interpreter; the JSON it prints."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_the_client_imports_no_engine_and_no_frames() -> None:
    code = ("import json, sys; from featurestore import Client; "
            f"print(json.dumps({{'heavy': sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {ENGINES + FRAMES!r}), "
            "'featurestore': sorted(m for m in sys.modules if m.startswith('featurestore'))}))")
    loaded = loaded_after(code)
    assert loaded["heavy"] == []
    # DESIGN.md: the serving client imports only the wire contract, types, values and errors;
    # nothing of the stores, the Plan, the server or the scientist's facade
    parts = {m.split(".")[1] for m in loaded["featurestore"] if "." in m}
    assert parts == {"definitions", "errors", "serving", "values"}
    assert [m for m in loaded["featurestore"] if m.startswith("featurestore.serving")] == [
        "featurestore.serving", "featurestore.serving._proto",
        "featurestore.serving._proto.serving_pb2", "featurestore.serving.client",
        "featurestore.serving.codegen", "featurestore.serving.proto"]

def test_public_names_load_on_first_use() -> None:
    code = ("import json, sys, featurestore; before = sorted(sys.modules); "
            "store = featurestore.FeatureStore; "
            "print(json.dumps({'before': [m for m in before if m.startswith('featurestore')], "
            "'after': 'featurestore.feature_store' in sys.modules, "
            "'listed': sorted(set(featurestore.__all__) - set(dir(featurestore))), "
            "'same': store is featurestore.FeatureStore}))")
    loaded = loaded_after(code)
    assert loaded["before"] == ["featurestore"]
    assert loaded["after"] is True and loaded["same"] is True
    assert loaded["listed"] == []  # dir() shows every public name, loaded or not


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'featurestore' has no attribute 'Cleint'"):
        featurestore.Cleint  # type: ignore[attr-defined]  # noqa: B018
