"""A Feast on-demand function copied, as its repo defines it, into a converted repo: for the
functions `feast_functions` cannot translate, which then run as plain-Python transforms.

The copy is the function's own source text (its decorator dropped) and what it needs from
its module: imports of installed modules and of names from them, constants written as
literals, and helper functions of the Feast repo, copied the same way. Anything else (a
module of the Feast repo, an object that has no literal and cannot be imported) makes the
copy fail with the reason, as does a function whose source cannot be read."""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any


@dataclass
class Copied:
    """`lines`: global name -> the line defining it (imports, constants); `functions`: name ->
    source, dependencies first."""

    lines: dict[str, str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)


def copy_function(fn: Any, root: Path) -> Copied:
    """`fn` and what it needs, as source text; ValueError says why it cannot be copied."""
    copied = Copied()
    _copy(fn, root.resolve(), copied)
    return copied


def reads(fn: Any, arg: str) -> set[str] | None:
    """The input names `fn` reads as `arg["name"]` or `arg.get("name")` (less those it sets
    itself, `arg["name"] = ...`); None when it reads its argument any other way (it may then
    read any input)."""
    func = _definition(fn)
    names: set[str] = set()
    written: set[str] = set()
    for node in ast.walk(func):
        if not (isinstance(node, ast.Name) and node.id == arg):
            continue
        parent = getattr(node, "parent", None)
        if isinstance(parent, ast.Subscript) and isinstance(parent.slice, ast.Constant):
            key = str(parent.slice.value)
            (names if isinstance(parent.ctx, ast.Load) else written).add(key)
        elif isinstance(parent, ast.Attribute) and parent.attr == "get" and isinstance(
                getattr(parent, "parent", None), ast.Call) and parent.parent.args and isinstance(
                parent.parent.args[0], ast.Constant):
            names.add(str(parent.parent.args[0].value))
        elif not isinstance(parent, ast.arg | ast.arguments):
            return None
    return names - written


def _definition(fn: Any) -> ast.FunctionDef:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ValueError(f"the source of {getattr(fn, '__name__', fn)!r} cannot be read ({exc})"
                         ) from exc
    func = ast.parse(source).body[0]
    if not isinstance(func, ast.FunctionDef):
        raise ValueError(f"{fn.__name__!r} is not a plain function definition")
    for node in ast.walk(func):
        for child in ast.iter_child_nodes(node):
            child.parent = node  # type: ignore[attr-defined]
    return func


def _copy(fn: FunctionType, root: Path, copied: Copied) -> None:
    name = fn.__name__
    if name in copied.functions:
        return
    func = _definition(fn)
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    copied.functions[name] = ""  # reserved while its helpers are copied (recursion)
    for used in sorted(_globals(func) & set(fn.__globals__)):
        value = fn.__globals__[used]
        if isinstance(value, FunctionType) and _inside(value, root):
            if value.__name__ != used:
                raise ValueError(f"{name}() calls {used}, another name for {value.__name__}")
            _copy(value, root, copied)
        else:
            line = _line(used, value, root, name)
            if copied.lines.setdefault(used, line) != line:
                raise ValueError(f"{name}() reads {used}, which another copied function "
                                 f"reads with another meaning ({copied.lines[used]})")
    del copied.functions[name]
    copied.functions[name] = "\n".join(lines[func.lineno - 1:])  # from `def`, no decorator


def _globals(func: ast.FunctionDef) -> set[str]:
    """Names the copied text (signature and body, not the decorators) reads that the function
    does not bind itself (nor in its nested scopes)."""
    parts = [*func.body, func.args, *([func.returns] if func.returns else [])]
    nodes = [n for part in parts for n in ast.walk(part)]
    bound = {n.arg for n in nodes if isinstance(n, ast.arg)}
    bound |= {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del)}
    bound |= {n.name for n in nodes if isinstance(
        n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.ExceptHandler) and n.name}
    bound |= {(a.asname or a.name).split(".")[0] for n in nodes
              if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    return {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - bound


def _inside(obj: Any, root: Path) -> bool:
    try:
        where = inspect.getsourcefile(obj) or getattr(obj, "__file__", None)
    except TypeError:
        where = getattr(obj, "__file__", None)
    return where is not None and Path(where).resolve().is_relative_to(root)


def _line(name: str, value: Any, root: Path, owner: str) -> str:
    """The line that gives `name` its value in the copy."""
    if isinstance(value, ModuleType):
        if _inside(value, root):
            raise ValueError(f"{owner}() uses {name}, a module of the Feast repo")
        module = value.__name__
        if module == name:
            return f"import {module}"
        if module.endswith(f".{name}"):
            return f"from {module.rsplit('.', 1)[0]} import {name}"
        return f"import {module} as {name}"
    if _literal(value):
        return f"{name} = {value!r}"
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if module and qualname and "." not in qualname and not _inside(value, root):
        try:
            found = getattr(importlib.import_module(module), qualname, None)
        except ImportError:
            found = None
        if found is value:
            return (f"from {module} import {qualname}" if qualname == name
                    else f"from {module} import {qualname} as {name}")
    raise ValueError(f"{owner}() uses {name} ({type(value).__name__}), which is neither a "
                     "literal, an import nor a function of the Feast repo")


def _literal(value: Any) -> bool:
    try:
        return ast.literal_eval(repr(value)) == value and type(
            ast.literal_eval(repr(value))) is type(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
