"""Loading a feature repo: its `featurestore.yaml` and the Python files that define features.

Everything a definition refers to is collected and checked here, so later stages (the Plan,
the stores) can assume a consistent set of definitions."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import yaml

from featurestore.definitions import (
    Definitions,
    Entity,
    FeatureRef,
    FeatureService,
    FeatureView,
    Request,
    Source,
    Transform,
    transform_of,
)
from featurestore.definitions.base import check_name, did_you_mean
from featurestore.definitions.types import Bool, DType, Float64, Int64, String, Timestamp
from featurestore.errors import DefinitionError, FeatureStoreError
from featurestore.plan import Plan, build_plan

CONFIG_FILE = "featurestore.yaml"
_CONFIG_KEYS = {"project", "offline_store", "online_store", "description", "offline_engine",
                "spark_master", "spark_tables"}
ENGINES = ("duckdb", "spark")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class RepoConfig:
    root: Path
    project: str
    offline_store: Path
    # "managed" (start a local redis-server) or a URL, as written (${NAME} not replaced yet)
    online_store: str = field(repr=False)
    offline_engine: str = "duckdb"  # what builds feature tables and training sets: ENGINES
    spark_master: str = "local[*]"  # the Spark master URL, with offline_engine: spark
    # where the Spark engine keeps feature tables: a folder, or a URL every executor can reach
    spark_tables: str = ".featurestore/spark"

    @property
    def spark_tables_url(self) -> str:
        """spark_tables as Spark reads it: a URL as written, a path resolved in the repo."""
        if "://" in self.spark_tables:
            return self.spark_tables
        path = Path(self.spark_tables)
        return str(path if path.is_absolute() else self.root / path)

    @property
    def online_url(self) -> str:
        """FEATURESTORE_REDIS_URL if set, else online_store ('managed' or a URL) with each
        ${NAME} replaced by the environment variable NAME, percent-encoded: a password can
        stay out of the file, and may hold any character. Replaced here, on use, so that
        commands that never reach Redis do not need the variable."""
        return os.environ.get("FEATURESTORE_REDIS_URL") or _VARIABLE.sub(_variable,
                                                                         self.online_store)

    @property
    def kernel_cache(self) -> Path:
        """Where Numba keeps the repo's compiled transforms."""
        return self.root / ".featurestore" / "kernels"


def load_config(root: str | Path) -> RepoConfig:
    root = Path(root).resolve()
    path = root / CONFIG_FILE
    if not path.is_file():
        raise FeatureStoreError(
            f"{root} is not a feature repo: {CONFIG_FILE} is missing. "
            "Create one with `featurestore init DIR` or pass --repo DIR"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FeatureStoreError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise FeatureStoreError(f"{path} must be a mapping of keys to values")
    unknown = set(raw) - _CONFIG_KEYS
    if unknown:
        raise FeatureStoreError(
            f"{path}: unknown keys {sorted(unknown)}; allowed keys are {sorted(_CONFIG_KEYS)}"
        )
    if "project" not in raw:
        raise FeatureStoreError(f"{path}: 'project' is required (a name such as card_fraud)")
    try:
        project = check_name("project", raw["project"])
    except DefinitionError as exc:
        raise FeatureStoreError(f"{path}: {exc}") from exc
    offline = Path(str(raw.get("offline_store", "offline.duckdb")))
    online = str(raw.get("online_store", "managed"))
    if online != "managed" and not online.startswith(
            ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")):
        raise FeatureStoreError(  # the value is not shown: it may hold a password
            f"{path}: online_store must be 'managed' or a redis://, rediss://, unix:// or "
            "redis+cluster:// URL")
    engine = str(raw.get("offline_engine", "duckdb"))
    check_engine(engine, f"{path}: offline_engine")
    spark = {k: str(raw[k]) for k in ("spark_master", "spark_tables") if k in raw}
    return RepoConfig(root, project, offline if offline.is_absolute() else root / offline, online,
                      engine, **spark)


def check_engine(engine: str, where: str) -> str:
    if engine not in ENGINES:
        raise FeatureStoreError(
            f"{where} is {engine!r}; it must be one of {', '.join(ENGINES)} (set offline_engine "
            f"in {CONFIG_FILE}, or pass --engine duckdb|spark)")
    return engine


def _variable(match: re.Match[str]) -> str:
    name = match.group(1)
    value = os.environ.get(name)
    if value is None:
        raise FeatureStoreError(
            f"{CONFIG_FILE}: online_store refers to ${{{name}}}, but the environment variable "
            f"{name} is not set; set it (to the Redis password, for example) or set "
            "FEATURESTORE_REDIS_URL")
    return quote(value, safe="")


def definition_files(root: Path) -> list[Path]:
    """Top-level Python files of the repo, in name order; sub-folders are not definitions."""
    return sorted(p for p in root.glob("*.py") if not p.name.startswith(("_", ".")))


def _import(path: Path, package: str) -> ModuleType:
    name = f"{package}.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise DefinitionError(
            f"{exc.filename}:{exc.lineno}: syntax error in definition file: {exc.msg}"
        ) from exc
    except Exception as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        line = frames[-1].lineno if frames else "?"
        if isinstance(exc, FeatureStoreError):  # a definition's own message: add where it is
            if str(exc).startswith(str(path)) or not frames:
                raise
            raise type(exc)(f"{path}:{line}: {exc}") from exc
        raise DefinitionError(
            f"{path}:{line}: importing this definition file failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return module


def _repo_id(config: RepoConfig) -> str:
    """The repo's identity, kept in .featurestore/id: it travels with the repo when it is
    copied or moved (together with its compiled kernels, which refer to it), unlike its
    path. A repo whose folder cannot be written is identified by its path."""
    path = config.root / ".featurestore" / "id"
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(uuid.uuid4().hex[:12])
        return path.read_text().strip()
    except OSError:
        return hashlib.sha1(str(config.root).encode()).hexdigest()[:12]


def load_repo(root: str | Path) -> tuple[RepoConfig, Definitions]:
    config = load_config(root)
    # Stable across processes and copies of the repo: Numba's cache finds compiled transforms'
    # modules by this name.
    package = f"fsrepo_{config.project}_{_repo_id(config)}"
    pkg = ModuleType(package)
    pkg.__path__ = [str(config.root)]
    sys.modules[package] = pkg  # kept: compiled transforms refer to their modules by name
    found: list[Any] = []
    for path in definition_files(config.root):
        module = _import(path, package)
        found.extend(vars(module).values())
    defs = _collect(found)
    _resolve_references(defs)
    _check(defs)
    return config, defs


def _collect(objects: list[Any]) -> Definitions:
    defs = Definitions()
    by_kind = {
        "entity": defs.entities, "source": defs.sources, "feature_view": defs.views,
        "transform": defs.transforms, "feature_service": defs.services,
    }
    pending = list(objects)
    while pending:
        obj = pending.pop()
        t = transform_of(obj)
        obj = t if t is not None else obj
        if not isinstance(obj, Entity | Source | FeatureView | Transform | FeatureService):
            continue
        table = by_kind[obj.kind]
        other = table.get(obj.name)
        if other is obj or (other is not None and other.defined_at == obj.defined_at):
            continue
        if other is not None:
            raise DefinitionError(
                f"two {obj.kind.replace('_', ' ')}s are named {obj.name!r}: one at "
                f"{other.defined_at}, one at {obj.defined_at}; rename one of them"
            )
        table[obj.name] = obj
        if isinstance(obj, FeatureView):
            pending += [obj.entity, obj.source]
        elif isinstance(obj, Transform):
            for value in obj.inputs.values():
                pending.append(value.view if isinstance(value, FeatureRef) else value)
        elif isinstance(obj, FeatureService):
            pending += [f.view if isinstance(f, FeatureRef) else f for f in obj.features]
    clash = set(defs.views) & set(defs.transforms)
    if clash:
        name = sorted(clash)[0]
        raise DefinitionError(
            f"{name!r} names both a feature view (at {defs.views[name].defined_at}) and a "
            f"transform (at {defs.transforms[name].defined_at}); rename one of them"
        )
    return defs


def resolve_feature(defs: Definitions, ref: str, owner: str) -> FeatureView | FeatureRef | Transform:
    """'view', 'view:field' or a transform name, as written in services and training_set."""
    if ":" in ref:
        view_name, feature = ref.split(":", 1)
        view = defs.views.get(view_name)
        if view is None:
            hint = did_you_mean(view_name, defs.views)
            raise DefinitionError(f"{owner}: unknown feature view {view_name!r}{hint}")
        if feature not in view.feature_names:
            raise DefinitionError(
                f"{owner}: feature view {view_name!r} has no feature {feature!r}"
                f"{did_you_mean(feature, view.feature_names)}"
            )
        return view[feature]
    if ref in defs.views:
        return defs.views[ref]
    if ref in defs.transforms:
        return defs.transforms[ref]
    known = list(defs.views) + list(defs.transforms)
    raise DefinitionError(
        f"{owner}: unknown feature {ref!r}{did_you_mean(ref, known)}; write 'view:feature', a view "
        "name, or a transform name"
    )


def _resolve_references(defs: Definitions) -> None:
    for t in defs.transforms.values():
        for param, value in list(t.inputs.items()):
            if isinstance(value, str):
                owner = f"transform {t.name!r} (at {t.defined_at}) input {param!r}"
                target = resolve_feature(defs, value, owner)
                if isinstance(target, FeatureView):
                    raise DefinitionError(f"{owner}: {value!r} is a whole view; name one feature")
                t.inputs[param] = target
    for s in defs.services.values():
        owner = f"FeatureService {s.name!r} (at {s.defined_at})"
        s.features = [resolve_feature(defs, f, owner) if isinstance(f, str) else f
                      for f in s.features]


_ANNOTATIONS: dict[DType, tuple[type, ...]] = {
    Int64: (int,), Float64: (float,), Bool: (bool,), String: (str,), Timestamp: (int,),
}


def _check(defs: Definitions) -> None:
    requests: dict[str, tuple[Request, Transform]] = {}
    for t in defs.transforms.values():
        where = f"transform {t.name!r} (at {t.defined_at})"
        _check_acyclic(t, [])
        signature = inspect.signature(t.fn)
        for param, value in t.inputs.items():
            dtype = t.input_dtype(param)
            note = signature.parameters[param].annotation
            if note is not inspect.Parameter.empty and note not in _ANNOTATIONS[dtype]:
                raise DefinitionError(
                    f"{where}: parameter {param!r} is annotated {getattr(note, '__name__', note)}"
                    f" but its input {value!r} has type {dtype}"
                )
            if param in t.defaults and not _fits(t.defaults[param], dtype):
                raise DefinitionError(
                    f"{where}: default {t.defaults[param]!r} for input {param!r} does not fit "
                    f"its type {dtype}"
                )
            if isinstance(value, Request):
                seen = requests.setdefault(value.name, (value, t))
                if seen[0].dtype != value.dtype:
                    raise DefinitionError(
                        f"{where}: request input {value.name!r} is {value.dtype} here but "
                        f"{seen[0].dtype} in transform {seen[1].name!r}; use one type"
                    )


def _fits(value: Any, dtype: DType) -> bool:
    if dtype is Float64:
        return isinstance(value, float | int) and not isinstance(value, bool)
    if dtype is Bool:
        return isinstance(value, bool)
    if dtype is String:
        return isinstance(value, str)
    return isinstance(value, int) and not isinstance(value, bool)


def _check_acyclic(t: Transform, path: list[str]) -> None:
    if t.name in path:
        cycle = " -> ".join([*path[path.index(t.name):], t.name])
        raise DefinitionError(f"transforms form a cycle: {cycle} (at {t.defined_at})")
    for value in t.inputs.values():
        if isinstance(value, Transform):
            _check_acyclic(value, [*path, t.name])


def load_plan(root: str | Path) -> Plan:
    """The repo's definitions as its files hold them now, compiled (kernels from the cache)."""
    config, defs = load_repo(root)
    return build_plan(config.project, defs, config.kernel_cache)
