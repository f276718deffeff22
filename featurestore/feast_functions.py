"""Feast on-demand functions rewritten as featurestore transform bodies, one per output.

A transform computes one value from scalar inputs, while Feast's functions build whole output
columns. The forms whose per-row value can be read off the source translate exactly:
- python mode, batch: `out["x"] = [e for a, b in zip(inputs["a"], inputs["b"])]`, the same
  in a returned dict, or a loop `for a, b in zip(...): ...; out["x"].append(e)` whose body
  only assigns local names and appends;
- python mode, singleton: `out["x"] = e` or `return {"x": e}` with e reading `inputs["a"]`;
- pandas mode: `df["x"] = e` or `return pd.DataFrame({"x": e})` where e combines input
  columns and constants with element-wise operators only (+ - * / // % **, comparisons,
  & | ^), which mean the same on one row as on a column.
Anything else is reported with the reason, never guessed."""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any

# Operators whose pandas (column) meaning is their Python (scalar) meaning row by row.
_ELEMENTWISE = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
                ast.BitAnd, ast.BitOr, ast.BitXor, ast.USub, ast.UAdd,
                ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_PANDAS_FORMS = ("pandas-mode outputs translate when each is element-wise arithmetic or "
                 "comparison of input columns and constants")


@dataclass(frozen=True)
class Body:
    """A transform's body: statements, then the returned expression, over `params`."""

    statements: tuple[str, ...]
    result: str
    params: tuple[str, ...]


def translate(fn: Any, mode: str, singleton: bool) -> dict[str, Body | str]:
    """Output name -> its transform body, or the reason it does not translate."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError) as exc:
        raise ValueError(f"its source cannot be read ({exc})") from exc
    func = tree.body[0]
    if not isinstance(func, ast.FunctionDef) or len(func.args.args) != 1:
        raise ValueError("the function does not take one `inputs` argument")
    arg = func.args.args[0].arg
    out: dict[str, Body | str] = {}
    for name, expr in _outputs(func).items():
        if mode == "pandas":
            out[name] = _pandas(expr, arg)
        else:
            found = _scalar(expr, arg, singleton, ())
            out[name] = found if found is not None else (
                "its value is not a plain expression of the inputs")
    if mode == "python" and not singleton:
        for loop in (n for n in ast.walk(func) if isinstance(n, ast.For)):
            out.update(_loop(loop, arg))
    return out


def _outputs(func: ast.FunctionDef) -> dict[str, ast.expr]:
    """Output name -> the expression assigned to it (`x["name"] = e`, or a returned
    `{"name": e}`, bare or wrapped in a call such as `pd.DataFrame({...})`)."""
    found: dict[str, ast.expr] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Subscript) and isinstance(node.targets[0].slice, ast.Constant):
            found[str(node.targets[0].slice.value)] = node.value
        elif isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Call) and len(value.args) == 1 and not value.keywords:
                value = value.args[0]
            if isinstance(value, ast.Dict):
                for k, v in zip(value.keys, value.values, strict=True):
                    if isinstance(k, ast.Constant):
                        found[str(k.value)] = v
    return found


def _pandas(expr: ast.expr, arg: str) -> Body | str:
    for node in ast.walk(expr):
        if isinstance(node, ast.Subscript) and _input_name(node, arg) is not None:
            continue
        if isinstance(node, ast.Subscript | ast.Attribute | ast.Call | ast.BoolOp | ast.IfExp
                      | ast.Lambda | ast.comprehension | ast.Name) and not _inside_input(
                node, expr, arg):
            return f"`{ast.unparse(node)}` is not element-wise ({_PANDAS_FORMS})"
        if isinstance(node, ast.Compare) and len(node.ops) != 1:
            return f"`{ast.unparse(node)}` chains comparisons ({_PANDAS_FORMS})"
        if isinstance(node, ast.operator | ast.unaryop | ast.cmpop) and not isinstance(
                node, _ELEMENTWISE):
            return f"operator {type(node).__name__} is not element-wise ({_PANDAS_FORMS})"
    found = _scalar(expr, arg, True, ())
    return found if found is not None else f"it reads the inputs another way ({_PANDAS_FORMS})"


def _inside_input(node: ast.AST, expr: ast.expr, arg: str) -> bool:
    """Whether `node` is part of an `inputs["x"]` subscript (its `inputs` name or key)."""
    return any(_input_name(sub, arg) is not None and node in ast.walk(sub)
               for sub in ast.walk(expr) if isinstance(sub, ast.Subscript))


def _loop(loop: ast.For, arg: str) -> dict[str, Body | str]:
    """Outputs appended in a `for` over the input columns, each with the loop's assignments."""
    renames = _loop_names(loop.target, loop.iter, arg)
    appends: dict[str, ast.expr] = {}
    statements: list[ast.stmt] = []
    problem = None if renames is not None else (
        "its loop does not iterate over inputs[...] or zip(inputs[...], ...)")
    for stmt in loop.body:
        target = _append_target(stmt)
        if target is not None:
            assert isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            appends[target] = stmt.value.args[0]
        elif isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            statements.append(stmt)
        elif problem is None:
            problem = (f"its loop has `{ast.unparse(stmt).splitlines()[0]}`; a loop translates "
                       "when its body only assigns local names and appends to the outputs")
    out: dict[str, Body | str] = {}
    for name, expr in appends.items():
        found = None if problem else _scalar(expr, arg, True, tuple(statements), renames)
        out[name] = found if found is not None else (
            problem or "its appended value is not a plain expression of the inputs")
    return out


def _loop_names(target: ast.expr, iterated: ast.expr, arg: str) -> dict[str, str] | None:
    """Loop variable -> the input it walks, for `for a in inputs["a"]` and
    `for a, b in zip(inputs["a"], inputs["b"])`."""
    if isinstance(iterated, ast.Call) and isinstance(iterated.func, ast.Name) and \
            iterated.func.id == "zip":
        sources = iterated.args
    elif _input_name(iterated, arg) is not None:
        sources = [iterated]
    else:
        return None
    targets = target.elts if isinstance(target, ast.Tuple) else [target]
    if len(targets) != len(sources):
        return None
    renames = {}
    for t, source in zip(targets, sources, strict=True):
        name = _input_name(source, arg)
        if not isinstance(t, ast.Name) or name is None:
            return None
        renames[t.id] = name
    return renames


def _append_target(stmt: ast.stmt) -> str | None:
    """`x["name"].append(e)` -> "name"."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr == "append"
            and len(stmt.value.args) == 1 and isinstance(stmt.value.func.value, ast.Subscript)
            and isinstance(stmt.value.func.value.slice, ast.Constant)):
        return None
    return str(stmt.value.func.value.slice.value)


def _scalar(expr: ast.expr, arg: str, singleton: bool, statements: tuple[ast.stmt, ...],
            renames: dict[str, str] | None = None) -> Body | None:
    renames = dict(renames or {})
    if not singleton:  # [e for a, b in zip(inputs["x"], inputs["y"])]
        if not (isinstance(expr, ast.ListComp) and len(expr.generators) == 1):
            return None
        gen = expr.generators[0]
        found = None if gen.ifs else _loop_names(gen.target, gen.iter, arg)
        if found is None:
            return None
        renames.update(found)
        expr = expr.elt
    used: list[str] = []
    local = {t.id for s in statements if isinstance(s, ast.Assign) for t in s.targets
             if isinstance(t, ast.Name)}
    if local & (set(renames) | set(renames.values())):
        return None  # a loop variable or input reassigned: keep it simple, refuse

    class Rewrite(ast.NodeTransformer):
        def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
            name = _input_name(node, arg)
            if name is None:
                return self.generic_visit(node)
            used.append(name) if name not in used else None
            return ast.Name(id=name, ctx=ast.Load())

        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id in renames:
                name = renames[node.id]
                used.append(name) if name not in used else None
                return ast.Name(id=name, ctx=ast.Load())
            return node

    body = [Rewrite().visit(s) for s in statements]
    result = Rewrite().visit(_unguarded(expr))
    names = {n.id for tree in [*body, result] for n in ast.walk(tree)
             if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    if names - set(used) - local - set(dir(builtins)):
        return None  # reads `inputs` some other way, or a name defined elsewhere
    return Body(tuple(ast.unparse(s) for s in body), ast.unparse(result), tuple(used))


def _unguarded(expr: ast.expr) -> ast.expr:
    """`e if x is not None [and y is not None ...] else None` is Feast's way of saying what
    a featurestore transform does anyway (its output is NULL when an input is missing), so
    the guard goes and `e` stays."""
    if not (isinstance(expr, ast.IfExp) and isinstance(expr.orelse, ast.Constant)
            and expr.orelse.value is None):
        return expr
    tests = expr.test.values if isinstance(expr.test, ast.BoolOp) and isinstance(
        expr.test.op, ast.And) else [expr.test]
    guards = all(isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.IsNot)
                 and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value is None
                 for t in tests)
    return expr.body if guards else expr


def _input_name(node: ast.AST, arg: str) -> str | None:
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
            and node.value.id == arg and isinstance(node.slice, ast.Constant)):
        return str(node.slice.value)
    return None
