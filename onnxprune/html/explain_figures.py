"""Figures of the ``explanation`` section (``onnxprune.explain``), from the JSON report alone.

* ``explain-samples``: the per-sample top-k overlap, Spearman correlation and sign agreement;
* ``explain-global``: mean |attribution| per unit of both models (a heat map per model for image
  patches, else bars for the units the baseline ranks highest);
* ``explain-groups-<attribute>``: mean top-k overlap per group, small groups hatched.
"""

from __future__ import annotations

import numpy as np

from onnxprune.html.draw import AFTER, BEFORE, Plot, new_figure, svg_data_uri

__all__ = ["explanation_figures"]

METRICS = ("top_k_overlap", "spearman", "sign_agreement")
# Bars for at most this many units (the baseline's most important).
TOP_UNITS = 20
SMALL_GROUP = 10


def _samples(section: dict) -> Plot:
    rows = section["per_sample"]
    figure = new_figure(7, 2.4)
    ax = figure.subplots()
    values = [[r[m] for r in rows if r[m] is not None] for m in METRICS]
    ax.boxplot(values, orientation="horizontal", tick_labels=list(METRICS), showfliers=False)
    for row, points in enumerate(values, start=1):
        spread = np.linspace(-0.15, 0.15, len(points)) if len(points) > 1 else [0.0]
        ax.scatter(points, row + np.asarray(spread), s=8, alpha=0.5, color=AFTER)
    ax.set_xlim(min(-0.05, *(min(v, default=0) for v in values)), 1.05)
    ax.set_xlabel("agreement of the candidate's explanation with the baseline's (1 = same)")
    return Plot(
        "explain-samples",
        "Explanation agreement per sample",
        f"Each point is one of {section['samples']} explained samples (box: quartiles).",
        ("explanation.per_sample",),
        svg_data_uri(figure),
    )


def _heat_maps(section: dict, units: list[dict]) -> object:
    rows, cols = section["grid"]
    figure = new_figure(7, 3.2)
    axes = figure.subplots(1, 2)
    maps = [np.full((rows, cols), np.nan) for _ in range(2)]
    for unit in units:
        maps[0][unit["row"], unit["col"]] = unit["mean_abs_before"]
        maps[1][unit["row"], unit["col"]] = unit["mean_abs_after"]
    top = float(np.nanmax(maps)) if np.isfinite(maps).any() else 1.0
    for ax, grid, title in zip(axes, maps, ("baseline", "candidate"), strict=True):
        image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=top or 1.0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.colorbar(image, ax=list(axes), label="mean |attribution|")
    return figure


def _bars(units: list[dict], unit_kind: str) -> object:
    shown = sorted(units, key=lambda u: u["rank_before"])[:TOP_UNITS]
    figure = new_figure(7, 1 + 0.28 * len(shown))
    ax = figure.subplots()
    rows = np.arange(len(shown))
    ax.barh(rows - 0.2, [u["mean_abs_before"] for u in shown], 0.4, color=BEFORE, label="baseline")
    ax.barh(rows + 0.2, [u["mean_abs_after"] for u in shown], 0.4, color=AFTER, label="candidate")
    ax.set_yticks(rows, [f"{unit_kind} {u['unit']} (rank {u['rank_after']})" for u in shown])
    ax.invert_yaxis()
    ax.set_xlabel("mean |attribution|")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def _global(section: dict) -> Plot | None:
    units = section["global"]["units"]
    if not units:
        return None
    if section.get("grid"):
        figure = _heat_maps(section, units)
        caption = "Mean |attribution| of every image patch, baseline and candidate (one scale)."
    else:
        figure = _bars(units, section["unit"])
        caption = (
            f"Mean |attribution| of the {min(TOP_UNITS, len(units))} units the baseline ranks "
            "highest; the label gives the candidate's rank of the unit."
        )
    return Plot(
        "explain-global",
        "Global importance before and after",
        caption,
        ("explanation.global.units",),
        svg_data_uri(figure),
    )


def _group(attribute: str, summary: dict) -> Plot:
    groups = summary["groups"]
    figure = new_figure(7, 1.2 + 0.35 * len(groups))
    ax = figure.subplots()
    bars = ax.barh(np.arange(len(groups)), [g["agreement"] for g in groups], 0.6, color=AFTER)
    for bar, group in zip(bars, groups, strict=True):
        if group["samples"] < SMALL_GROUP:
            bar.set_hatch("///")
    ax.set_yticks(np.arange(len(groups)), [f"{g['group']} (n={g['samples']})" for g in groups])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("mean top-k overlap")
    return Plot(
        f"explain-groups-{attribute}",
        f"Explanation agreement by {attribute}",
        f"Mean top-k overlap per group of the explained samples; hatched groups have fewer "
        f"than {SMALL_GROUP} explained samples.",
        (f"explanation.groups.{attribute}",),
        svg_data_uri(figure),
    )


def explanation_figures(report: dict) -> list[Plot]:
    """The explanation figures, or none when the report has no ``explanation`` section."""
    section = report.get("explanation")
    if not section or not section.get("per_sample"):
        return []
    plots = [_samples(section)]
    plots += [p for p in (_global(section),) if p is not None]
    plots += [_group(a, s) for a, s in section.get("groups", {}).items() if s.get("groups")]
    return plots
