"""Generated protobuf code is built, not committed: codegen writes it, and without grpcio-tools
the import error says what to run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from featurestore.serving import codegen


def test_generates_the_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codegen, "OUT", tmp_path / "_proto")
    codegen.generate()
    assert sorted(p.name for p in codegen.OUT.iterdir()) == [
        "__init__.py", "serving_pb2.py", "serving_pb2.pyi"]
    assert "featurestore/v1/serving.proto" in (codegen.OUT / "serving_pb2.py").read_text()


def test_without_grpc_tools_the_error_says_make_install(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codegen, "OUT", tmp_path / "_proto")
    monkeypatch.setitem(sys.modules, "grpc_tools", None)  # as if not installed
    with pytest.raises(ImportError, match="run `make install`"):
        codegen.generate()
