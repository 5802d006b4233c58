"""The report's figures, each drawn from the JSON report alone (None when it lacks the data).

* ``sparsity``: per-layer sparsity before/after (unstructured) or kept units per group
  (structured);
* ``latency``: the distribution of per-run times of both models (box plot and every run);
* ``size``: bytes on disk and DEFLATE-compressed bytes of the original, each stage and the result;
* ``package``: the size of each file of an edge package (``export-edge``);
* ``groups-<attribute>``: per-group accuracy before/after with 95% Wilson intervals, small groups
  hatched;
* the explanation drift figures (``explain_figures``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from onnxprune.html.draw import AFTER, BEFORE, Plot, new_figure, style, svg_data_uri
from onnxprune.html.explain_figures import explanation_figures

__all__ = ["SMALL_GROUP", "report_figures"]

# Groups with fewer samples than this are marked small: their accuracy is a noisy estimate.
SMALL_GROUP = 50
_LABEL = 40


def _short(text: str) -> str:
    return text if len(text) <= _LABEL else "…" + text[-(_LABEL - 1) :]


def _paired_bars(ax, labels: list[str], before: list, after: list, names: tuple[str, str]):
    """Horizontal bars, two per label (None values are left out)."""
    rows = np.arange(len(labels))
    for offset, values, colour, name in (
        (-0.2, before, BEFORE, names[0]),
        (0.2, after, AFTER, names[1]),
    ):
        ax.barh(
            rows + offset,
            [np.nan if v is None else v for v in values],
            0.4,
            color=colour,
            label=name,
        )
    ax.set_yticks(rows, [_short(label) for label in labels])
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _sparsity(report: dict) -> Plot | None:
    pruning = report.get("pruning") or {}
    structured = pruning.get("mode") == "structured"
    key, rows = ("groups", "id") if structured else ("layers", "name")
    items = pruning.get(key) or []
    if not items:
        return None
    fields = (
        ("units_before", "units_after") if structured else ("sparsity_before", "sparsity_after")
    )
    figure = new_figure(7, 1 + 0.28 * len(items))
    ax = figure.subplots()
    _paired_bars(
        ax,
        [i[rows] for i in items],
        [i.get(fields[0]) for i in items],
        [i.get(fields[1]) for i in items],
        ("before", "after"),
    )
    ax.set_xlabel("units kept" if structured else "sparsity (fraction of zero weights)")
    what = "Kept units per group" if structured else "Sparsity per layer"
    return Plot(
        "sparsity",
        what,
        f"{what}, before and after pruning.",
        (f"pruning.{key}",),
        svg_data_uri(figure),
    )


def _latency_runs(ax, sides: list[str], samples: list[list[float]]) -> None:
    """Box plots and every run; far outliers (beyond both 2x the median and the upper
    quartile + 3 IQR of their model) are counted in the title, not drawn."""
    ax.boxplot(samples, orientation="horizontal", tick_labels=sides, showfliers=False)
    limit = 0.0
    for times in samples:
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        limit = max(limit, 2 * median, q3 + 3 * (q3 - q1))
    for row, times in enumerate(samples, start=1):
        shown = [t for t in times if t <= limit]
        spread = np.linspace(-0.15, 0.15, len(shown)) if len(shown) > 1 else [0.0]
        colour = BEFORE if row == 1 else AFTER
        ax.scatter(shown, row + np.asarray(spread), s=6, alpha=0.5, color=colour)
    slow = [t for times in samples for t in times if t > limit]
    if slow:
        ax.set_xlim(0, limit)
        ax.set_title(
            f"{len(slow)} slower run(s) off the scale (up to {max(slow):.3g} ms)", fontsize=8
        )


def _latency_percentiles(ax, sides: list[str], latency: dict) -> None:
    """An older report without per-run times: median, quartiles and p95 only."""
    stats = []
    for side in sides:
        entry = latency[side]
        low, high = entry["iqr_ms"]
        stats.append(
            {"label": side, "med": entry["p50_ms"], "q1": low, "q3": high, "whislo": low,
             "whishi": entry["p95_ms"]}
        )  # fmt: skip
    ax.bxp(stats, orientation="horizontal", showfliers=False)


def _latency(report: dict) -> Plot | None:
    latency = (report.get("verification") or {}).get("latency")
    if not latency:
        return None
    sides = [s for s in ("baseline", "candidate") if latency.get(s)]
    samples = [[t for t in latency[s].get("times_ms") or [] if t is not None] for s in sides]
    figure = new_figure(7, 2.2)
    ax = figure.subplots()
    raw = all(samples)
    if raw:
        _latency_runs(ax, sides, samples)
    else:
        _latency_percentiles(ax, sides, latency)
    ax.set_xlabel(f"ms per run (batch {latency.get('batch')})")
    caption = (
        "Time of every interleaved run of each model (box: quartiles and median)."
        if raw
        else "Median, quartiles and 95th percentile of each model (no per-run times)."
    )
    return Plot(
        "latency",
        "Latency distribution",
        caption,
        tuple(f"verification.latency.{s}" for s in sides),
        svg_data_uri(figure),
    )


def _size_rows(report: dict) -> list[tuple[str, dict]]:
    size = (report.get("verification") or {}).get("size") or {}
    rows = [("original", size["baseline"])] if size.get("baseline") else []
    stages = report.get("stages") or []
    if stages:
        rows += [(s["stage"], s) for s in stages]
    elif size.get("candidate"):
        rows.append(("candidate", size["candidate"]))
    return rows


def _size(report: dict) -> Plot | None:
    rows = _size_rows(report)
    if not rows:
        return None
    figure = new_figure(7, 1 + 0.35 * len(rows))
    ax = figure.subplots()
    kib = [[(r.get(k) or 0) / 1024 for _, r in rows] for k in ("bytes", "compressed_bytes")]
    _paired_bars(ax, [name for name, _ in rows], *kib, ("on disk", "DEFLATE-compressed"))
    ax.set_xlabel("KiB")
    sources = ["verification.size"] + (["stages"] if report.get("stages") else [])
    return Plot(
        "size",
        "Size",
        "Bytes on disk and after DEFLATE (pruned zeros compress), per stage.",
        tuple(sources),
        svg_data_uri(figure),
    )


def _package(report: dict) -> Plot | None:
    files = (report.get("edge") or {}).get("files") or []
    if not files:
        return None
    figure = new_figure(7, 1 + 0.35 * len(files))
    ax = figure.subplots()
    rows = np.arange(len(files))
    ax.barh(rows, [f["bytes"] / 1024 for f in files], 0.6, color=AFTER)
    ax.set_yticks(rows, [f["name"] for f in files])
    ax.invert_yaxis()
    ax.set_xlabel("KiB")
    return Plot(
        "package",
        "Edge package files",
        "Size of each file of the package (report and manifest sizes are in manifest.json).",
        ("edge.files",),
        svg_data_uri(figure),
    )


def _wilson(p: float | None, n: int, z: float = 1.96) -> tuple[float, float]:
    """Half-widths below and above ``p`` of its 95% Wilson interval over ``n`` samples."""
    if p is None or not n:
        return 0.0, 0.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(p - (centre - half), 0.0), max(centre + half - p, 0.0)


def _small(group: dict, minimum: int) -> bool:
    return group.get("small", group["samples"] < minimum)


def _group_plot(attribute: str, summary: dict) -> Plot:
    groups = summary["groups"]
    minimum = summary.get("min_group_size", SMALL_GROUP)  # reports before it was recorded
    metric = "accuracy" if "accuracy_before" in groups[0] else "top1_agreement"
    figure = new_figure(7, 1.2 + 0.4 * len(groups))
    ax = figure.subplots()
    rows = np.arange(len(groups))
    pairs = (
        (("before", -0.2, BEFORE), ("after", 0.2, AFTER))
        if metric == "accuracy"
        else ((None, 0.0, AFTER),)
    )
    for when, offset, colour in pairs:
        field = f"accuracy_{when}" if when else metric
        values = [g.get(field) for g in groups]
        errors = np.array([_wilson(v, g["samples"]) for v, g in zip(values, groups, strict=True)]).T
        bars = ax.barh(
            rows + offset,
            [np.nan if v is None else v for v in values],
            0.4,
            xerr=errors,
            color=colour,
            label=when or "agreement",
            capsize=2,
        )
        for bar, group in zip(bars, groups, strict=True):
            if _small(group, minimum):
                bar.set_hatch("///")
    ax.set_yticks(
        rows,
        [
            f"{_short(g['group'])} (n={g['samples']}{', small' if _small(g, minimum) else ''})"
            for g in groups
        ],
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel(metric.replace("_", " "))
    caption = (
        f"Per-group {metric.replace('_', ' ')} by {attribute}; error bars are 95% Wilson "
        f"intervals from the group sizes; hatched groups have fewer than {minimum} "
        "samples (left out of gaps, the worst group and gates)."
    )
    return Plot(
        f"groups-{attribute}",
        f"Groups by {attribute}",
        caption,
        (f"verification.quality.groups.{attribute}",),
        svg_data_uri(figure),
    )


def _groups(report: dict) -> list[Plot]:
    groups = ((report.get("verification") or {}).get("quality") or {}).get("groups") or {}
    return [_group_plot(a, s) for a, s in groups.items() if s.get("groups")]


_SINGLE: tuple[Callable[[dict], Plot | None], ...] = (_sparsity, _latency, _size, _package)


def report_figures(
    report: dict, extra: tuple[Callable[[dict], list[Plot]], ...] = ()
) -> list[Plot]:
    """Every figure the report has data for, in page order (``extra`` adds more kinds)."""
    with style():
        plots = [plot for draw in _SINGLE if (plot := draw(report)) is not None]
        plots += _groups(report)
        plots += explanation_figures(report)
        for draw in extra:
            plots += draw(report)
    return plots
