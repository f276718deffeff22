"""The catalog page as HTML: one self-contained document (inline CSS and SVG, no script, nothing
fetched from anywhere), rendered from a Catalog."""

from __future__ import annotations

from datetime import timedelta
from html import escape
from typing import Any

from featurestore.plan import ViewPlan
from featurestore.plan.hashing import version_of
from featurestore.ui.catalog import APPLIED, Catalog
from featurestore.ui.distributions import Distribution
from featurestore.ui.lineage import anchor, svg
from featurestore.values.timestamps import EPOCH

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2433;
     background:#f4f6f9}
header{background:#1d2b45;color:#fff;padding:14px 28px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;color:#c5d0e3;font-size:13px}
main{padding:8px 28px 40px} h2{margin:26px 0 10px;font-size:17px}
section.card{background:#fff;border:1px solid #dde3ec;border-radius:8px;padding:12px 16px;
     margin:0 0 12px}
.card h3{margin:0 0 4px;font-size:15px} .meta{color:#5a6578;font-size:13px;margin:2px 0}
.badge{display:inline-block;font-size:11px;border-radius:9px;padding:1px 8px;margin-left:6px;
     background:#e8edf5;color:#33415c;vertical-align:middle}
.ok{background:#dcf3e4;color:#17613a} .warn{background:#fdf0d5;color:#7a4d00}
.bad{background:#fbdcdc;color:#8a1c1c} .unknown{background:#eceff3;color:#5a6578}
table{border-collapse:collapse;width:100%;margin-top:8px}
th,td{text-align:left;padding:5px 8px;border-top:1px solid #edf0f5;vertical-align:top}
th{font-size:12px;color:#5a6578;font-weight:600} code{font-size:12.5px}
svg.hist rect.bar{fill:#4a78c2} svg.hist rect.bar:hover{fill:#1d4f9c}
svg.hist text{font-size:10px;fill:#5a6578}
.lineage-box{background:#fff;border:1px solid #dde3ec;border-radius:8px;padding:10px;
     overflow-x:auto}
svg.lineage .heading{font-size:12px;font-weight:600;fill:#5a6578}
svg.lineage .edge{fill:none;stroke:#9aa6b8;stroke-width:1.3}
svg.lineage rect{stroke-width:1.2} svg.lineage text{font-size:12px;fill:#1d2433}
.node.source rect{fill:#fdf3e1;stroke:#d9a441} .node.view rect{fill:#e6effc;stroke:#4a78c2}
.node.transform rect{fill:#efe8fb;stroke:#8a63c9} .node.service rect{fill:#e2f4e8;stroke:#3b9a5e}
a{color:#1d4f9c;text-decoration:none} a:hover{text-decoration:underline}
"""


def render(c: Catalog) -> str:
    title = f"{c.config.project}: feature catalog"
    services = "".join(_service(c, name) for name in sorted(c.plan.services))
    views = "".join(_view(c, name) for name in sorted(c.plan.views))
    transforms = "".join(_transform(c, name) for name in sorted(c.plan.transforms))
    sources = "".join(_source(c, name) for name in sorted(c.plan.sources))
    entities = "".join(_entity(c, name) for name in sorted(c.plan.entities))
    offline = "read" if not c.offline_note else f"not read: {c.offline_note}"
    online = c.freshness.detail if c.freshness.known else f"freshness unknown: {c.freshness.detail}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f'</title><meta name="viewport" content="width=device-width"><style>{CSS}</style></head>'
        f'<body><header><h1>{escape(title)}</h1><p>read {_time(c.read_at_us)} (read-only; '
        f'reload for fresh values) &middot; offline store <span id="offline-state">'
        f'{escape(offline)}</span> &middot; <span id="online-state">{escape(online)}</span>'
        f'</p></header><main>'
        f'<h2>Lineage</h2><div class="lineage-box">{svg(c.plan)}</div>'
        f'<h2>Feature services</h2>{services or _none("feature services")}'
        f'<h2>Feature views</h2>{views or _none("feature views")}'
        f'<h2>Transforms</h2>{transforms or _none("transforms")}'
        f'<h2>Sources</h2>{sources}<h2>Entities</h2>{entities}</main></body></html>')


def _none(what: str) -> str:
    return f'<p class="meta">The repo defines no {what}.</p>'


def _card(kind: str, name: str, heading: str, body: str) -> str:
    return (f'<section class="card {kind}" id="{escape(anchor(kind, name))}"><h3>{heading}'
            f'</h3>{body}</section>')


def _head(c: Catalog, kind: str, name: str, version: str) -> str:
    state = c.states.get((kind, name), "not applied")
    css = "ok" if state == APPLIED else "warn"
    return (f'{escape(name)}<span class="badge">version {escape(version)}</span>'
            f'<span class="badge state {css}">{escape(state)}</span>')


def _described(text: str | None) -> str:
    text = (text or "").strip()
    return f'<p>{escape(text)}</p>' if text else '<p class="meta">no description</p>'


def _link(kind: str, name: str, text: str | None = None) -> str:
    return f'<a href="#{escape(anchor(kind, name))}">{escape(text or name)}</a>'


def _service(c: Catalog, name: str) -> str:
    s = c.plan.services[name]
    selection = c.plan.select(service=name)
    rows = "".join(
        f"<tr><td>{escape(o.name)}</td><td><code>{o.dtype}</code></td><td>"
        + (_link("view", o.ref.split(":")[0], o.ref) if ":" in o.ref
           else _link("transform", o.ref, f"transform {o.ref}"))
        + f"</td><td>{_parity_cell(c, name, o.name)}</td></tr>" for o in selection.outputs)
    body = (_described(c.defs.services[name].description)
            + f'<p class="meta">online: {_served(c, list(selection.views))} &middot; live parity: '
            f'{_parity(c, name)}</p>'
            f'<table><tr><th>feature</th><th>type</th><th>from</th><th>parity mismatches</th>'
            f'</tr>{rows}</table>')
    return _card("service", name, _head(c, "feature_service", name, version_of(s.hash)), body)


def _served(c: Catalog, views: list[str]) -> str:
    """Whether every view a service reads is served online at the repo's version."""
    if not c.freshness.known:
        return '<span class="badge unknown">unknown</span>'
    stale = [v for v in views if (f := c.freshness.views.get(v)) is None
             or f.version != c.plan.views[v].version]
    if stale:
        return (f'<span class="badge bad">not served</span> not materialized at this version: '
                f'{escape(", ".join(stale))}')
    return '<span class="badge ok">served</span> every view at this version'


def _parity_rows(c: Catalog, service: str) -> list[dict[str, Any]]:
    return [f for f in c.parity.get("features", []) if f.get("selection") == service]


def _parity(c: Catalog, service: str) -> str:
    rows = _parity_rows(c, service)
    if not rows:
        return '<span class="badge unknown parity">not checked</span>'
    checked = sum(int(f.get("checked", 0)) for f in rows)
    mismatched = sum(int(f.get("mismatched", 0)) for f in rows)
    when = f"last run {_time(int(c.parity['run_at_us']))}" if c.parity.get("run_at_us") else ""
    if mismatched:
        return (f'<span class="badge bad parity">{mismatched} mismatch'
                f'{"es" if mismatched > 1 else ""}</span> in {checked} values checked, {when}')
    return f'<span class="badge ok parity">parity holds</span> {checked} values checked, {when}'


def _parity_cell(c: Catalog, service: str, feature: str) -> str:
    found = [f for f in _parity_rows(c, service) if f.get("feature") == feature]
    if not found:
        return '<span class="meta">not checked</span>'
    f = found[0]
    return f"{int(f.get('mismatched', 0))} of {int(f.get('checked', 0))}"


def _view(c: Catalog, name: str) -> str:
    v = c.plan.views[name]
    defs = c.defs.views[name]
    keys = ", ".join(f"{k}: {t}" for k, t in v.join_keys)
    kind = "windowed aggregations" if v.windowed else (
        f"latest values, ttl {_duration(v.ttl_us)}" if v.ttl_us else "latest values, no ttl")
    meta = (f'<p class="meta">entity {_link("entity", v.entity)} ({escape(keys)}) &middot; '
            f'source {_link("source", v.source)} &middot; {escape(kind)}'
            f'{"" if v.online else " &middot; offline only"}</p>')
    shown = c.distributions.get(name)
    why = c.offline_note or (
        "the definitions changed since apply: run `featurestore apply`"
        if c.states.get(("feature_view", name)) != APPLIED else "")
    rows = []
    for i, (feature, dtype) in enumerate(v.features):
        about = _aggregate(v, i) if v.windowed else defs.field(feature).description
        chart = _chart(shown[feature]) if shown is not None else \
            f'<span class="meta">no distribution ({escape(why)})</span>'
        rows.append(f'<tr class="feature" data-feature="{escape(feature)}"><td>'
                    f'{escape(feature)}</td><td><code>{dtype}</code></td><td>'
                    f'{escape(about) or "<span class=meta>no description</span>"}</td>'
                    f'<td>{chart}</td></tr>')
    body = (_described(defs.description) + meta + _freshness(c, v)
            + '<table><tr><th>feature</th><th>type</th><th>description</th>'
              '<th>distribution in the feature table</th></tr>' + "".join(rows) + "</table>")
    return _card("view", name, _head(c, "feature_view", name, v.version), body)


def _aggregate(v: ViewPlan, i: int) -> str:
    a = v.aggregates[i]
    return (f"{a.function} of {a.column} over {_duration(a.window_us)}, "
            f"advancing every {_duration(a.hop_us)}")


def _freshness(c: Catalog, v: ViewPlan) -> str:
    if not v.online:
        return '<p class="meta freshness">freshness: offline only, never materialized</p>'
    if not c.freshness.known:
        return ('<p class="meta freshness">freshness: <span class="badge unknown">unknown'
                f'</span> {escape(c.freshness.detail)}</p>')
    f = c.freshness.views.get(v.name)
    if f is None:
        return ('<p class="meta freshness">freshness: <span class="badge bad">not materialized'
                '</span></p>')
    other = "" if f.version == v.version else (
        f' <span class="badge warn">serves version {escape(f.version)}</span>')
    view = escape(v.name)
    return (f'<p class="meta freshness">materialized up to <b class="end" data-view="{view}" '
            f'data-us="{f.end_us or ""}">{_time(f.end_us)}</b>{_age(c, f.end_us)}, written '
            f'{_time(f.materialized_at_us)} &middot; last push <b class="push" '
            f'data-view="{view}" data-us="{f.last_push_us or ""}">'
            f'{_time(f.last_push_us, "none since")}</b>{_age(c, f.last_push_us)}{other}</p>')


def _transform(c: Catalog, name: str) -> str:
    t = c.plan.transforms[name]
    inputs = "".join(
        f"<tr><td>{escape(i.param)}</td><td><code>{i.dtype}</code></td><td>"
        + (f"request input {escape(i.ref)}" if i.kind == "request" else
           _link("view", i.ref.split(":")[0], i.ref) if i.kind == "feature" else
           _link("transform", i.ref, f"transform {i.ref}"))
        + "</td></tr>" for i in t.inputs)
    body = (_described(c.defs.transforms[name].fn.__doc__)
            + f'<p class="meta">returns <code>{t.output}</code>; computed when asked for (online '
              f'and in training sets), so nothing is stored to chart'
              + ("" if t.compiled else "; runs as plain Python, row by row (slower)") + "</p>"
            + f"<table><tr><th>input</th><th>type</th><th>from</th></tr>{inputs}</table>")
    return _card("transform", name, _head(c, "transform", name, t.version), body)


def _source(c: Catalog, name: str) -> str:
    s = c.plan.sources[name]
    created = f" &middot; created <code>{escape(s.created)}</code>" if s.created else ""
    body = (_described(c.defs.sources[name].description)
            + f'<p class="meta">{escape(s.format)} <code>{escape(s.path or s.table or "")}'
              f'</code> &middot; event time <code>{escape(s.timestamp)}</code>{created}</p>')
    return _card("source", name, _head(c, "source", name, version_of(s.hash)), body)


def _entity(c: Catalog, name: str) -> str:
    e = c.plan.entities[name]
    keys = ", ".join(f"{k}: {t}" for k, t in e.join_keys)
    body = (_described(c.defs.entities[name].description)
            + f'<p class="meta">join keys <code>{escape(keys)}</code></p>')
    return _card("entity", name, _head(c, "entity", name, version_of(e.hash)), body)


W, H = 260, 60  # a histogram's plot area


def _chart(d: Distribution) -> str:
    notes = [f"{d.rows:,} values"]
    if d.nulls:
        notes.append(f"{d.nulls:,} NULL")
    if d.outside:
        notes.append(f"{d.outside:,} {escape(d.outside_label)}")
    caption = f'<div class="meta">{" &middot; ".join(notes)}</div>'
    if not d.bars:
        return caption
    return (_categories(d) if d.categorical else _ranges(d)) + caption


def _ranges(d: Distribution) -> str:
    top = max(b.count for b in d.bars) or 1
    width = W / len(d.bars)
    bars = "".join(
        f'<rect class="bar" x="{i * width + 0.5:.1f}" y="{H - b.count / top * H:.1f}" '
        f'width="{max(width - 1, 1):.1f}" height="{b.count / top * H:.1f}" '
        f'data-label="{escape(b.label)}" data-count="{b.count}"><title>{escape(b.label)}: '
        f'{b.count:,}</title></rect>' for i, b in enumerate(d.bars))
    low, high = d.bars[0].label.split(" to ")[0], d.bars[-1].label.split(" to ")[-1]
    return (f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H + 14}">'
            f'<line x1="0" y1="{H}" x2="{W}" y2="{H}" stroke="#b8c2d1"/>{bars}'
            f'<text x="0" y="{H + 12}">{escape(low)}</text>'
            f'<text x="{W}" y="{H + 12}" text-anchor="end">{escape(high)}</text></svg>')


def _categories(d: Distribution) -> str:
    top = max(b.count for b in d.bars) or 1
    row, label = 15, 90
    bars = "".join(
        f'<text x="{label - 4}" y="{i * row + 11}" text-anchor="end">{escape(b.label[:14])}</text>'
        f'<rect class="bar" x="{label}" y="{i * row + 2}" height="{row - 4}" '
        f'width="{max(b.count / top * (W - label - 50), 1):.1f}" data-label="{escape(b.label)}" '
        f'data-count="{b.count}"><title>{escape(b.label)}: {b.count:,}</title></rect>'
        f'<text x="{label + b.count / top * (W - label - 50) + 4:.1f}" y="{i * row + 11}">'
        f'{b.count:,}</text>' for i, b in enumerate(d.bars))
    return (f'<svg class="hist categories" xmlns="http://www.w3.org/2000/svg" width="{W}" '
            f'height="{len(d.bars) * row + 2}">{bars}</svg>')


def _time(us: int | None, missing: str = "never") -> str:
    if not us:
        return missing
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(c: Catalog, us: int | None) -> str:
    if not us:
        return ""
    seconds = (c.read_at_us - us) / 1e6
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f" ({seconds / size:.0f} {unit} ago)"
    return f" ({seconds:.0f} s ago)"


def _duration(us: int | None) -> str:
    if not us:
        return "none"
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("min", 60_000_000),
                       ("s", 1_000_000)):
        if us % size == 0:
            return f"{us // size} {unit}"
    return f"{us} us"
