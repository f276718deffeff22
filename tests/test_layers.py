"""The architecture, enforced: which parts of the package may import which (README,
"Architecture"). Every `featurestore.*` import of every module is read from its source,
function-local ones included, and checked against the table below."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "featurestore"

BASE = {"errors", "progress"}
VALUES = BASE | {"definitions", "types", "values"}
PLANNED = VALUES | {"plan"}
STORES = PLANNED | {"aggregation"}
COORDINATED = STORES | {"repo", "push", "materialization"}

# part -> the parts it may import besides itself. offline and online never import each other;
# the serving client imports only the wire contract, types, values and errors.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "progress": set(),
    "definitions": BASE,
    "types": {"definitions"},
    "values": BASE | {"definitions"},
    "plan": VALUES,
    "repo": PLANNED,
    "aggregation": PLANNED,
    "offline": STORES,
    "online": STORES,
    "push": STORES | {"offline", "online"},
    "materialization": STORES | {"offline", "online", "push"},
    "serving.client": VALUES | {"serving.proto"},
    "serving.proto": VALUES,
    "serving": COORDINATED | {"online", "serving.proto", "serving.feast_http"},
    # Feast's HTTP API: JSON turned into the client's request and the response read back
    "serving.feast_http": COORDINATED | {"online", "serving", "serving.proto", "serving.client"},
    # the facade answers online requests in process with the server's own steps
    "feature_store": COORDINATED | {"offline", "online", "serving", "serving.client",
                                    "serving.proto"},
    # a face: it reads the samples servers log and asks the offline store what they missed
    "parity": PLANNED | {"offline", "feature_store", "serving.client", "serving"},
    "feast_import": PLANNED | {"repo", "feast_functions", "feast_fallback"},
    "feast_functions": set(),  # reads Feast functions' source: imports nothing of ours
    "feast_fallback": set(),  # copies Feast functions' source: imports nothing of ours
    "feast_rows": {"plan"},  # runs a Feast function on one row, inside converted repos
    # a face: the catalog page reads definitions, both stores and the parity summary
    "ui": COORDINATED | {"offline", "online", "serving"},
    "scaffold": VALUES | {"__init__"},
    "cli": {"*"},
    "__init__": VALUES | {"feature_store", "serving.client"},
}


def part(module: str) -> str:
    """The part of the architecture a module (dotted, without 'featurestore.') belongs to."""
    if module == "serving.feast_http":
        return module
    if module in ("serving.client", "serving.proto", "serving.codegen") \
            or module.startswith("serving._proto"):
        return "serving.client" if module == "serving.client" else "serving.proto"
    return module.split(".")[0] or "__init__"


def imports(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, imported featurestore module) for every import in a source file; `from A import
    b` imports module A.b when b is a module of the package."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("featurestore"):
                continue
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                where = package.parent.joinpath(*name.split("."))
                module = name if where.with_suffix(".py").exists() or where.is_dir() else node.module
                if (node.lineno, module) not in out:
                    out.append((node.lineno, module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("featurestore")]
    return out


def module_of(path: Path, package: Path) -> str:
    rel = path.relative_to(package).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def violations(package: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        here = part(module_of(path, package))
        allowed = ALLOWED[here]
        for line, target in imports(path, package):
            there = part(target.removeprefix("featurestore").lstrip("."))
            if there != here and "*" not in allowed and there not in allowed:
                found.append(f"{path.relative_to(package.parent)}:{line}: {here} imports {there} "
                             f"({target})")
    return found


def test_every_import_follows_the_layers() -> None:
    assert violations() == []


def test_a_violation_is_caught(tmp_path: Path) -> None:
    """The checker itself: an online module importing the offline store is reported."""
    bad = tmp_path / "featurestore"
    (bad / "online").mkdir(parents=True)
    (bad / "online" / "leak.py").write_text("from featurestore.offline import OfflineStore\n")
    (bad / "plan.py").write_text("def f():\n    from featurestore.online import store\n")
    assert violations(bad) == [
        "featurestore/online/leak.py:1: online imports offline (featurestore.offline)",
        "featurestore/plan.py:2: plan imports online (featurestore.online)",
    ]

