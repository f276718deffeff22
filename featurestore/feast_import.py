"""`featurestore import-feast`: a Feast feature repo rewritten as a featurestore repo.

Feast's own loader reads the repo (so whatever Feast accepts is what gets converted), then
each definition is mapped to ours: entities (key types read from the data), file sources
(push sources through their batch source) with Feast's meaning of their created column and of
zone-less timestamps, feature views, on-demand feature views whose outputs translate (see
feast_functions; each output becomes a compiled transform), and feature services. Whatever has
no equivalent is listed with the reason, never dropped silently. The output is written to a
temporary folder, loaded and compiled by featurestore, and only then moved into place, so a
failed import leaves nothing behind."""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from featurestore.errors import FeatureStoreError
from featurestore.feast_fallback import Copied, copy_function, reads
from featurestore.feast_functions import Body, translate
from featurestore.plan import build_plan
from featurestore.repo import load_repo

# Feast's primitive type names -> ours
TYPES = {"INT32": "Int64", "INT64": "Int64", "FLOAT32": "Float64", "FLOAT64": "Float64",
         "STRING": "String", "BOOL": "Bool", "UNIX_TIMESTAMP": "Timestamp"}


class FeastImportError(FeatureStoreError):
    """The folder is not a Feast repo, or its definitions cannot be read or converted."""


@dataclass
class Imported:
    out: Path
    converted: list[str] = field(default_factory=list)  # "kind name"
    skipped: list[str] = field(default_factory=list)  # "kind name: reason"
    notes: list[str] = field(default_factory=list)  # converted with a difference worth knowing


@dataclass
class _Source:
    name: str
    path: Path
    timestamp: str
    created: str | None
    mapping: dict[str, str]
    timezone: str | None


def import_feast(feast_repo: str | Path, out: str | Path, partial: bool = False) -> Imported:
    """Writes the converted repo to `out`. Unless `partial`, anything that does not convert
    fails the import (listing every such thing) and nothing is written."""
    root, out = Path(feast_repo).resolve(), Path(out).resolve()
    if not (root / "feature_store.yaml").is_file():
        raise FeastImportError(f"{root} is not a Feast repo: it has no feature_store.yaml")
    if out.exists() and any(out.iterdir()):
        raise FeastImportError(f"{out} exists and is not empty; choose a new folder")
    contents, config = _read(root)
    result = Imported(out)
    lines = _Writer(root, out, result).render(contents)
    if result.skipped and not partial:
        raise FeastImportError(
            "these definitions have no featurestore equivalent, so nothing was written "
            "(--partial writes the rest):\n  " + "\n  ".join(result.skipped))
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # a normal folder, not mkdtemp's private 0700
    try:
        (staging / "featurestore.yaml").write_text(yaml.safe_dump(
            {"project": _name(config.get("project", "imported")), "online_store": "managed"}))
        (staging / "features.py").write_text(lines)
        shutil.rmtree(staging / ".featurestore", ignore_errors=True)
        try:
            repo_config, defs = load_repo(staging)
            build_plan(repo_config.project, defs, repo_config.kernel_cache)
        except FeatureStoreError as exc:
            raise FeastImportError(f"the converted definitions do not load: {exc}") from exc
        shutil.rmtree(staging / ".featurestore", ignore_errors=True)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _read(root: Path) -> tuple[Any, dict[str, Any]]:
    try:
        from feast.repo_operations import parse_repo
    except ImportError as exc:
        raise FeastImportError(
            "reading a Feast repo needs Feast: pip install 'featurestore[feast]'") from exc
    config = yaml.safe_load((root / "feature_store.yaml").read_text()) or {}
    cwd = os.getcwd()
    sys.path.insert(0, str(root))  # Feast imports the definitions files as modules
    _forget_modules(root)  # by their names: another repo's same-named files may be cached
    try:
        os.chdir(root)  # and resolves relative data paths from the repo
        return parse_repo(root), config
    except Exception as exc:  # definitions files run arbitrary code
        raise FeastImportError(
            f"Feast could not load the definitions in {root}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
        _forget_modules(root)


def _forget_modules(root: Path) -> None:
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        for name in {".".join(parts), ".".join(parts[:-1]) if parts[-1] == "__init__" else ""}:
            if name:
                sys.modules.pop(name, None)


def _name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_") or "imported"


@dataclass(frozen=True)
class _Input:
    """An input an on-demand function may read: its transform parameter, its reference in
    our definitions, its type."""

    param: str
    ref: str
    dtype: str


# Names the written definitions file imports.
IMPORTED = {"timedelta", "Entity", "FeatureService", "FeatureView", "Field", "Request", "Source",
            "transform", "feast_row", *set(TYPES.values())}


class _Writer:
    def __init__(self, root: Path, out: Path, result: Imported):
        self.root, self.out, self.result = root, out, result
        self.copied = Copied()  # Feast functions run as plain Python, with what they need
        self.sources: dict[str, _Source] = {}
        # join keys -> (entity name, key types)
        self.entities: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
        self.views: dict[str, tuple[str, _Source, list[tuple[str, str]], Any]] = {}
        self.transforms: dict[str, dict[str, str]] = {}  # odfv -> output -> transform name
        self.transform_texts: list[str] = []
        self.taken: set[str] = set()  # transform names
        self.defined: set[str] = set()  # the transforms' function names

    def render(self, contents: Any) -> str:
        self.join_keys = {e.name: e.join_key for e in contents.entities}
        for fv in contents.feature_views:
            self._view(fv)
        for odfv in contents.on_demand_feature_views:
            self._odfv(odfv)
        for kind, items in (("stream feature view", contents.stream_feature_views),
                            ("label view", getattr(contents, "label_views", []))):
            for item in items:
                self.result.skipped.append(f"{kind} {item.name}: not supported by featurestore")
        services = [self._service(s) for s in contents.feature_services]
        return self._source_text([s for s in services if s])

    def _file_source(self, source: Any, owner: str) -> _Source | None:
        kind = type(source).__name__
        if kind == "PushSource":
            self.result.notes.append(
                f"{owner}: push source {source.name} is read through its batch source; "
                "featurestore pushes feed windowed views")
            source = source.batch_source
            kind = type(source).__name__
        if kind != "FileSource":
            self.result.skipped.append(f"feature view {owner}: its {kind} has no equivalent "
                                       "(only file sources are converted)")
            return None
        if source.name in self.sources:
            return self.sources[source.name]
        path = Path(source.path)
        path = path if path.is_absolute() else self.root / path
        if not path.exists():
            self.result.skipped.append(f"feature view {owner}: data file {path} is missing")
            return None
        schema = pq.read_schema(path) if path.is_file() else None
        naive = [f.name for f in schema or [] if pa.types.is_timestamp(f.type) and f.type.tz is None]
        timezone = "UTC" if naive else None
        if naive:
            self.result.notes.append(
                f"source {source.name}: zone-less timestamps ({', '.join(naive)}) are read as "
                'UTC, as Feast does (declared timezone="UTC")')
        if source.created_timestamp_column:
            self.result.notes.append(
                f"source {source.name}: created column {source.created_timestamp_column} only "
                'breaks ties between rows of equal event time, as in Feast (declared '
                'created_role="tie_break")')
        found = _Source(_name(source.name), path, source.timestamp_field,
                        source.created_timestamp_column or None, dict(source.field_mapping or {}),
                        timezone)
        self.sources[source.name] = found
        return found

    def _view(self, fv: Any) -> None:
        keys = [self.join_keys[e] for e in fv.entities
                if e in self.join_keys and not self.join_keys[e].startswith("__")]
        if not keys:
            self.result.skipped.append(f"feature view {fv.name}: no entity (entity-less views "
                                       "have no featurestore equivalent)")
            return
        source = self._file_source(fv.batch_source, fv.name)
        if source is None:
            return
        schema = pq.read_schema(source.path) if source.path.is_file() else None
        key_types = {}
        for key in keys:
            column = next((c for c, k in source.mapping.items() if k == key), key)
            if schema is None or column not in schema.names:
                self.result.skipped.append(f"feature view {fv.name}: join key {key} is not a "
                                           f"column of {source.path}")
                return
            key_types[key] = "String" if "string" in str(schema.field(column).type) else "Int64"
        name = _name("_".join(e for e in fv.entities if e in self.join_keys))
        entity = self.entities.setdefault(tuple(keys), (name, key_types))[0]
        fields = []
        for f in fv.schema:
            if f.name in keys:
                continue
            ours = TYPES.get(getattr(f.dtype, "name", str(f.dtype)))
            if ours is None:
                self.result.skipped.append(f"feature {fv.name}:{f.name}: type {f.dtype} has no "
                                           "featurestore equivalent")
                continue
            if getattr(f.dtype, "name", "") in ("FLOAT32", "INT32"):
                self.result.notes.append(f"feature {fv.name}:{f.name}: {f.dtype.name} becomes "
                                         f"{ours}")
            fields.append((f.name, ours))
        if not fields:
            self.result.skipped.append(f"feature view {fv.name}: none of its features converts")
            return
        ttl = fv.ttl if fv.ttl and fv.ttl.total_seconds() > 0 else None
        self.views[fv.name] = (entity, source, fields, ttl)
        self.result.converted.append(f"feature view {fv.name}")

    def _odfv(self, odfv: Any) -> None:
        if odfv.mode not in ("python", "pandas"):
            self.result.skipped.append(
                f"on-demand feature view {odfv.name}: {odfv.mode} mode; only python- and "
                "pandas-mode functions translate")
            return
        inputs: dict[str, _Input] = {}  # name the function may read -> the input it is
        for projection in odfv.source_feature_view_projections.values():
            view = self.views.get(projection.name)
            if view is None:
                self.result.skipped.append(f"on-demand feature view {odfv.name}: reads view "
                                           f"{projection.name}, which was not converted")
                return
            types = dict(view[2])
            for f in projection.features:
                if f.name in types:
                    found = _Input(f.name, f'{_name(projection.name)}["{f.name}"]',
                                   types[f.name])
                    inputs[f.name] = inputs[f"{projection.name}__{f.name}"] = found
        for request in odfv.source_request_sources.values():
            for f in request.schema:
                ours = TYPES.get(getattr(f.dtype, "name", str(f.dtype)))
                if ours:
                    inputs[f.name] = _Input(f.name, f'Request("{f.name}", {ours})', ours)
        udf = odfv.feature_transformation.udf
        try:
            outputs = translate(udf, odfv.mode, bool(odfv.singleton))
        except ValueError as exc:
            self.result.skipped.append(f"on-demand feature view {odfv.name}: {exc}")
            return
        names = self.transforms.setdefault(odfv.name, {})
        fallback = _Fallback(self, odfv, inputs)
        for f in odfv.features:
            ours = TYPES.get(getattr(f.dtype, "name", str(f.dtype)))
            body = outputs.get(f.name, "no assignment to this output was found")
            missing = [u for u in body.params if u not in inputs] if isinstance(body, Body) else []
            if ours is None or missing:
                why = f"input(s) {missing} not available" if missing else \
                    f"type {f.dtype} has no equivalent"
                self.result.skipped.append(f"on-demand feature {odfv.name}:{f.name}: {why}")
                continue
            name = _name(f.name)
            if name in self.taken:
                name = _name(f"{odfv.name}_{f.name}")
                self.result.notes.append(
                    f"on-demand feature {odfv.name}:{f.name} is the transform {name} (another "
                    f"on-demand view has an output named {f.name})")
            if isinstance(body, Body):
                params = ", ".join(f'"{u}": {inputs[u].ref}' for u in body.params)
                lines = "".join(f"    {line}\n" for st in body.statements
                                for line in st.splitlines())
                function, extra = self.function_name(name)
                self.transform_texts.append(
                    f"@transform(inputs={{{params}}}, output={ours}{extra})\n"
                    f"def {function}({', '.join(body.params)}):\n{lines}"
                    f"    return {body.result}\n")
            else:
                try:
                    self.transform_texts.append(fallback.transform(name, f.name, ours))
                except ValueError as exc:
                    self.result.skipped.append(f"on-demand feature {odfv.name}:{f.name}: {body}; "
                                               f"it cannot run as plain Python either: {exc}")
                    continue
                fallback.written.append((f.name, body))
            self.taken.add(name)
            names[f.name] = name
        if fallback.written:
            outs = ", ".join(o for o, _ in fallback.written)
            self.result.notes.append(
                f"on-demand feature view {odfv.name}: {outs} run{'s' * (len(fallback.written) == 1)}"
                f" its function as plain Python, one row at a time (slower than a compiled "
                f"transform), since {fallback.written[0][1]}")
        if names:
            self.result.converted.append(f"on-demand feature view {odfv.name} "
                                         f"({len(names)} transforms)")

    def bound(self) -> set[str]:
        """Names the written file binds besides the copied Feast code (services aside)."""
        return (IMPORTED | {name for name, _ in self.entities.values()}
                | {s.name for s in self.sources.values()} | {_name(v) for v in self.views}
                | self.defined)

    def function_name(self, transform: str) -> tuple[str, str]:
        """A Python name for a transform's function that no other definition or copied
        Feast code uses, and the `name=` argument it then needs."""
        function = transform
        while function in {*self.copied.lines, *self.copied.functions, *self.defined}:
            function += "_"
        self.defined.add(function)
        return function, "" if function == transform else f', name="{transform}"'

    def adopt(self, copied: Copied) -> None:
        """Adds a function's copy to the file's, unless a name would mean two things."""
        mine = {**self.copied.lines, **self.copied.functions}
        for name, text in {**copied.lines, **copied.functions}.items():
            if name in self.bound() or mine.get(name, text) != text:
                raise ValueError(f"its copy would define {name}, a name the converted "
                                 "definitions already use for something else")
        self.copied.lines.update(copied.lines)
        self.copied.functions.update(copied.functions)

    def _service(self, service: Any) -> str | None:
        items, lost = [], []
        for projection in service.feature_view_projections:
            for f in projection.features:
                if f.name in dict(self.views.get(projection.name, (0, 0, []))[2]):
                    items.append(f'"{_name(projection.name)}:{f.name}"')
                elif f.name in self.transforms.get(projection.name, {}):
                    items.append(f'"{self.transforms[projection.name][f.name]}"')
                else:
                    lost.append(f"{projection.name}:{f.name}")
        if not items:
            self.result.skipped.append(f"feature service {service.name}: none of its features "
                                       "converts")
            return None
        if lost:
            self.result.skipped.append(f"feature service {service.name}: written without "
                                       f"{', '.join(lost)} (not converted, see above)")
        self.result.converted.append(f"feature service {service.name}")
        variable = _name(service.name)
        while variable in {*self.bound(), *self.copied.lines, *self.copied.functions}:
            variable += "_service"
        return (f"{variable} = FeatureService(\"{_name(service.name)}\", features=[\n"
                f"    {', '.join(items)}])\n")

    def _source_text(self, services: list[str]) -> str:
        parts = ['"""Converted from a Feast repo by `featurestore import-feast`."""\n',
                 "from datetime import timedelta\n",
                 "from featurestore import (Entity, FeatureService, FeatureView, Field, Request,",
                 "                          Source, transform)",
                 "from featurestore.types import Bool, Float64, Int64, String, Timestamp\n"]
        for keys, (name, types) in self.entities.items():
            spec = ", ".join(f'"{k}": {types[k]}' for k in keys)
            parts.append(f'{name} = Entity("{name}", join_keys={{{spec}}})')
        parts.append("")
        for s in self.sources.values():
            path = os.path.relpath(s.path, self.out)
            extra = (f', created="{s.created}", created_role="tie_break"' if s.created else "") + (
                f", field_mapping={s.mapping!r}" if s.mapping else "") + (
                f', timezone="{s.timezone}"' if s.timezone else "")
            parts.append(f'{s.name} = Source("{s.name}", path="{path}", '
                         f'timestamp="{s.timestamp}"{extra})')
        parts.append("")
        for name, (entity, source, fields, ttl) in self.views.items():
            ttl_text = f", ttl=timedelta(seconds={int(ttl.total_seconds())})" if ttl else ""
            field_text = ", ".join(f'Field("{f}", {t})' for f, t in fields)
            parts.append(f'{_name(name)} = FeatureView("{_name(name)}", entity={entity}, '
                         f"source={source.name}{ttl_text},\n    fields=[{field_text}])\n")
        if self.copied.functions:
            parts[4:4] = ["from featurestore.feast_rows import feast_row"]
            parts += ["", "# Feast's on-demand functions that do not translate, as its repo defines "
                      "them: the", "# transforms below run them as plain Python, one row at a time.",
                      *sorted(self.copied.lines.values(), key=lambda line: not line.startswith(
                          ("import ", "from "))), "",
                      *(f"\n{text}\n" for text in self.copied.functions.values())]
        parts += [f"\n{t}" for t in self.transform_texts]
        parts += ["", *services]
        return "\n".join(parts)


class _Fallback:
    """An on-demand view's outputs that do not translate, written as plain-Python transforms
    (`compiled=False`) that call a copy of the view's own function on one row at a time
    (featurestore.feast_rows), so training sets and serving run the same Python."""

    def __init__(self, writer: _Writer, odfv: Any, inputs: dict[str, _Input]):
        self.writer, self.odfv, self.inputs = writer, odfv, inputs
        self.written: list[tuple[str, str]] = []  # (output, why it did not translate)

    def transform(self, name: str, output: str, dtype: str) -> str:
        """A transform computing `output`; ValueError says why there can be none."""
        row = self._row()
        if dtype == "Timestamp":
            raise ValueError("a Timestamp output is not converted to plain Python")
        params = list(dict.fromkeys(i.param for i in row.values()))
        refs = {i.param: i.ref for i in row.values()}
        function, extra = self.writer.function_name(name)
        udf = self.odfv.feature_transformation.udf.__name__
        mode = "singleton" if self.odfv.mode == "python" and self.odfv.singleton else \
            self.odfv.mode
        spec = ", ".join(f'"{p}": {refs[p]}' for p in params)
        values = ", ".join(f'"{key}": {i.param}' for key, i in row.items())
        return (f"@transform(inputs={{{spec}}},\n"
                f"           output={dtype}, compiled=False{extra})\n"
                f"def {function}({', '.join(params)}):\n"
                f'    return feast_row({udf}, "{mode}", {{{values}}}, "{output}")\n')

    def _row(self) -> dict[str, _Input]:
        """Input name as the function reads it -> the input, once the function is copied
        (again for each output: the copy is the same each time)."""
        udf = self.odfv.feature_transformation.udf
        arg = next(iter(inspect.signature(udf).parameters), None)
        if arg is None:
            raise ValueError("the function takes no argument")
        read = reads(udf, arg)
        if read is None:
            row = dict(self.inputs)
        else:
            unknown = sorted(read - set(self.inputs))
            if unknown:
                raise ValueError(f"it reads {', '.join(unknown)}, not among the view's "
                                 "features and request inputs")
            row = {key: self.inputs[key] for key in sorted(read)}
        if not row:
            raise ValueError("it reads none of its inputs")
        if any(i.dtype == "Timestamp" for i in row.values()):
            raise ValueError("Timestamp inputs are not passed to plain Python")
        taken = {i.param for i in row.values()} & {udf.__name__, "feast_row"}
        if taken:
            raise ValueError(f"an input is named {', '.join(sorted(taken))}")
        self.writer.adopt(copy_function(udf, self.writer.root))
        return row
