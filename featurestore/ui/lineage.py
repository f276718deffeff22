"""Lineage for the catalog page, drawn server-side as SVG: sources feed feature views, views'
features feed transforms (and transforms feed transforms), views and transforms feed feature
services. Four columns, one per kind; an edge is a curve from its input to its user."""

from __future__ import annotations

from html import escape

from featurestore.plan import Plan

KINDS = ("source", "view", "transform", "service")
HEADINGS = {"source": "sources", "view": "feature views", "transform": "transforms",
            "service": "feature services"}
NODE_W, NODE_H, ROW, COLUMN, TOP = 180, 26, 36, 260, 34
MAX_CHARS = 24

Node = tuple[str, str]  # (kind, name)


def anchor(kind: str, name: str) -> str:
    """The page's id for a definition, which lineage nodes link to."""
    return f"{kind}-{name}"


def edges(plan: Plan) -> list[tuple[Node, Node]]:
    """(input, user) pairs, each once, in a stable order."""
    found: dict[tuple[Node, Node], None] = {}
    for v in sorted(plan.views.values(), key=lambda v: v.name):
        found[("source", v.source), ("view", v.name)] = None
    for t in sorted(plan.transforms.values(), key=lambda t: t.name):
        for i in t.inputs:
            if i.kind == "feature":
                found[("view", i.ref.split(":", 1)[0]), ("transform", t.name)] = None
            elif i.kind == "transform":
                found[("transform", i.ref), ("transform", t.name)] = None
    for s in sorted(plan.services.values(), key=lambda s: s.name):
        for ref in s.features:
            used: Node = ("view", ref.split(":", 1)[0]) if ":" in ref else ("transform", ref)
            found[used, ("service", s.name)] = None
    return list(found)


def _columns(plan: Plan) -> dict[str, list[str]]:
    """Each kind's names top to bottom; a transform below the transforms it reads."""
    depth: dict[str, int] = {}

    def depth_of(name: str) -> int:
        if name not in depth:
            depth[name] = 1 + max((depth_of(i.ref) for i in plan.transforms[name].inputs
                                   if i.kind == "transform"), default=-1)
        return depth[name]

    return {"source": sorted(plan.sources), "view": sorted(plan.views),
            "transform": sorted(plan.transforms, key=lambda n: (depth_of(n), n)),
            "service": sorted(plan.services)}


def svg(plan: Plan) -> str:
    columns = _columns(plan)
    at = {(kind, name): (10 + c * COLUMN, TOP + r * ROW)
          for c, kind in enumerate(KINDS) for r, name in enumerate(columns[kind])}
    height = TOP + max(len(names) for names in columns.values()) * ROW + 10
    parts = [f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{10 + 4 * COLUMN}" '
             f'height="{height}" role="img" aria-label="lineage">',
             '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
             'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#7a8699"/>'
             '</marker></defs>']
    for c, kind in enumerate(KINDS):
        parts.append(f'<text class="heading" x="{10 + c * COLUMN}" y="18">{HEADINGS[kind]}</text>')
    for (a, b) in edges(plan):
        (x1, y1), (x2, y2) = at[a], at[b]
        y1, y2 = y1 + NODE_H / 2, y2 + NODE_H / 2
        if a[0] == b[0]:  # transform to transform, in one column: a bow on the right
            x = x1 + NODE_W
            path = f"M{x},{y1} C{x + 40},{y1} {x + 40},{y2} {x},{y2}"
        else:
            x1 += NODE_W
            path = f"M{x1},{y1} C{x1 + 50},{y1} {x2 - 50},{y2} {x2},{y2}"
        parts.append(f'<path class="edge" data-from="{escape(":".join(a))}" '
                     f'data-to="{escape(":".join(b))}" d="{path}" marker-end="url(#arrow)">'
                     f'<title>{escape(a[1])} \u2192 {escape(b[1])}</title></path>')
    for (kind, name), (x, y) in at.items():
        shown = name if len(name) <= MAX_CHARS else name[:MAX_CHARS - 1] + "\u2026"
        parts.append(f'<a href="#{escape(anchor(kind, name))}"><g class="node {kind}" '
                     f'data-node="{escape(kind)}:{escape(name)}"><title>{kind} {escape(name)}'
                     f'</title><rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5"/>'
                     f'<text x="{x + 9}" y="{y + 17}">{escape(shown)}</text></g></a>')
    parts.append("</svg>")
    return "".join(parts)
