"""feast_compare.py's result as a Markdown table and a chart: every configuration measured,
each with the ratio that says how many times faster featurestore was (below 1: Feast was
faster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feast_repo import SERVICES

STORES = {"feast_duckdb": "DuckDB store", "feast_file": "file store"}
VARIANTS = {"with_transforms": "+ transforms", "without_transforms": "no transforms"}
LATENCY = {"online_in_process": "in process", "online_network": "network"}
LEGEND = """\
In process: Feast's SDK `get_online_features(...).to_dict()` vs our `OnlineStore.read`.
Network: Feast's HTTP feature server (one kept-alive HTTP connection, JSON) vs `featurestore
serve` (one gRPC channel, `featurestore.Client`), from a separate client process, both with the
same number of workers. "+ transforms": the 70 features and 3 request-time transforms (Feast: a
python-mode on-demand view); "no transforms": the 70 features. Times faster: Feast / ours for
seconds and latency, ours / Feast for rates.

"""
# Feast's latency sides: features named one by one (its fastest call), and, over HTTP, the
# feature service named instead.
FEAST_SIDES = {"feast": "", "feast_by_service": ", Feast naming the service"}


def rows(result: dict[str, Any]) -> list[tuple[str, str, float, float, float]]:
    """(variant, measure, Feast, ours, ratio) for every figure, the ratio oriented so that
    above 1 means featurestore did better."""
    out = []
    for variant in SERVICES:
        ts = result["training_set"][variant]
        for store, name in STORES.items():
            out.append((variant, f"training set, Feast {name} (s, median)",
                        ts[store]["median_s"], ts["ours"]["median_s"],
                        ts[store]["median_s"] / ts["ours"]["median_s"]))
    mat = result["materialization"]
    for store, name in STORES.items():
        out.append(("", f"materialization, Feast {name} (entity rows/s)",
                    mat[store]["rows_per_s"], mat["ours"]["rows_per_s"],
                    mat["ours"]["rows_per_s"] / mat[store]["rows_per_s"]))
    for where, name in LATENCY.items():
        for variant in SERVICES:
            for batch, r in result[where][variant].items():
                for side, label in FEAST_SIDES.items():
                    for p in ("p50_ms", "p99_ms") if side in r else ():
                        out.append((variant, f"{name}{label}, batch "
                                    f"{batch.removeprefix('batch_')} {p.removesuffix('_ms')} (ms)",
                                    r[side][p], r["ours"][p], r[side][p] / r["ours"][p]))
    for variant in SERVICES:
        tp = result["throughput"][variant]
        out.append((variant, f"throughput, batch 1, {result['config']['workers']} workers "
                    "(req/s)", tp["feast"]["req_per_s"], tp["ours"]["req_per_s"],
                    tp["ratio_ours_over_feast"]))
    return out


def table(result: dict[str, Any]) -> str:
    lines = [LEGEND + "| service | measure | Feast | featurestore | times faster (ours) |",
             "|---|---|---|---|---|"]
    for variant, measure, theirs, ours, ratio in rows(result):
        lines.append(f"| {VARIANTS.get(variant, 'both')} | {measure} | {_number(theirs)} | "
                     f"{_number(ours)} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def chart(result: dict[str, Any], path: Path) -> None:
    """One bar per figure of Feast's fastest calls (latency at p50), on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = [(v, m, r) for v, m, _, _, r in rows(result)
              if " p99 " not in m and FEAST_SIDES["feast_by_service"] not in m]
    colors = {"with_transforms": "#3b7dd8", "without_transforms": "#9aa5b1", "": "#4c9a5a"}
    labels = [f"{m.rsplit(' (', 1)[0]}{', ' + VARIANTS[v] if v else ''}" for v, m, _ in picked]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(picked) + 1.2))
    ax.barh(labels[::-1], [r for _, _, r in picked][::-1],
            color=[colors[v] for v, _, _ in picked][::-1])
    ax.set_xscale("log")
    ratios = [r for _, _, r in picked]
    ax.set_xlim(min(0.8, min(ratios) / 1.5), max(ratios) * 2.5)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("times faster: featurestore over Feast (log scale; below 1, Feast faster)")
    ax.set_title(f"featurestore vs Feast {result['config']['feast']}, same data, same run\n"
                 "(latency at p50; blue: + transforms, grey: without, green: materialization)",
                 fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    for y, (_, _, r) in enumerate(picked[::-1]):
        ax.text(r, y, f" {r:.1f}x", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
