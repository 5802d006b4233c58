"""The HTML report: one self-contained page (no network, figures embedded) from the JSON report.

The page is rendered from the report exactly as its JSON file holds it (``to_json``, then
parsed back), so ``onnxprune report R.json --html R.html`` gives the same page as ``--html`` on
the command that wrote ``R.json``. It shows the verdict and headline numbers, every figure the
data allows (``figures``), and then every section of the JSON as tables (``tables``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from onnxprune.html.draw import Plot
from onnxprune.html.figures import report_figures
from onnxprune.html.format import child_path, scalar_html
from onnxprune.html.tables import value_html
from onnxprune.report import to_json

__all__ = ["HEADLINE", "render_html"]

RUN_FIELDS = ("schema_version", "tool", "command", "model", "output", "passed", "error")
TITLES = {
    "pruning": "Pruning",
    "verification": "Verification",
    "cleanup": "Clean-up",
    "quantization": "Quantization",
    "stages": "Stages",
    "drop_layers": "Dropped residual blocks",
    "grow": "Grown",
    "explanation": "Explanation drift",
    "edge": "Edge package",
    "non_finite": "Values that were not finite (null in the JSON)",
}
# Headline numbers: (label, JSON path); shown when the report has them.
HEADLINE = (
    ("accuracy before", "verification.quality.accuracy_before"),
    ("accuracy after", "verification.quality.accuracy_after"),
    ("accuracy drop", "verification.quality.accuracy_drop"),
    ("top-1 agreement", "verification.quality.top1_agreement"),
    ("output cosine (mean)", "verification.quality.cosine_mean"),
    ("max abs difference", "verification.quality.max_abs_diff"),
    ("bytes before", "verification.size.baseline.bytes"),
    ("bytes after", "verification.size.candidate.bytes"),
    ("p50 ms before", "verification.latency.baseline.p50_ms"),
    ("p50 ms after", "verification.latency.candidate.p50_ms"),
    ("speedup (p50 ratio)", "verification.latency.speedup"),
    ("explanation agreement", "explanation.aggregate.agreement"),
)

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.4em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.3em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.15em .5em;text-align:left;vertical-align:top}
table.kv>tbody>tr>th,table.kv>tr>th{background:#f6f6f6;font-weight:normal;white-space:nowrap}
thead th{background:#eef1f4}.int,.float{font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;font-weight:bold}
.pass{background:#dff0d8}.fail{background:#f2dede}.none{background:#eee}
figure{margin:1.5em 0}figure img{max-width:100%}figcaption{font-size:.9em;color:#555}
nav a{margin-right:1em}.empty{color:#888}
"""


def _lookup(data: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def _verdict(data: dict) -> str:
    if data.get("error"):
        return '<span class="verdict fail">REFUSED</span>'
    if not data.get("gates"):
        return '<span class="verdict none">no gates set (nothing was checked)</span>'
    if data.get("passed"):
        return '<span class="verdict pass">PASS</span>'
    return '<span class="verdict fail">FAIL (a gate broke)</span>'


def _headline(data: dict) -> str:
    rows = []
    for label, path in HEADLINE:
        found, value = _lookup(data, path)
        if found and not isinstance(value, dict | list):
            rows.append(
                f"<tr><th>{html.escape(label)}</th><td>{scalar_html(path, value)}</td></tr>"
            )
    return f'<table class="kv">{"".join(rows)}</table>' if rows else ""


def _run(data: dict) -> str:
    rows = "".join(
        f"<tr><th>{key}</th><td>{value_html(child_path('', key), data[key])}</td></tr>"
        for key in RUN_FIELDS
        if key in data
    )
    return f'<table class="kv">{rows}</table>'


def _figure(plot: Plot) -> str:
    sources = html.escape(" ".join(plot.sources), quote=True)
    return (
        f'<figure id="fig-{html.escape(plot.key, quote=True)}" data-sources="{sources}">'
        f"<h3>{html.escape(plot.title)}</h3>"
        f'<img alt="{html.escape(plot.title, quote=True)}" src="{plot.image}">'
        f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>"
    )


def _section(key: str, value: Any) -> str:
    title = TITLES.get(key, key.replace("_", " ").capitalize())
    return (
        f'<section id="sec-{html.escape(key, quote=True)}"><h2>{html.escape(title)}</h2>'
        f"{value_html(key, value)}</section>"
    )


def render_html(report: dict, extra: tuple[Callable[[dict], list[Plot]], ...] = ()) -> str:
    """The report as one self-contained HTML page (figures need the ``html`` extra).

    Args:
        report: a report as ``build_report`` makes it (or as read back from its JSON file).
        extra: more figure makers (each takes the JSON report and returns ``Plot``s).
    """
    data = json.loads(to_json(report))
    plots = report_figures(data, extra)
    sections = [key for key in data if key not in (*RUN_FIELDS, "gates")]
    title = f"onnxprune {data.get('command', '')}: {data.get('model', '')}"
    nav = "".join(f'<a href="#sec-{k}">{html.escape(TITLES.get(k, k))}</a>' for k in sections)
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{_verdict(data)}</p>",
        _headline(data),
        f"<nav>{nav}</nav>",
        '<section id="sec-run"><h2>Run</h2>' + _run(data) + "</section>",
        '<section id="sec-gates"><h2>Gates</h2>'
        + value_html("gates", data.get("gates"))
        + "</section>",
        '<section id="sec-figures"><h2>Figures</h2>' + "".join(map(_figure, plots)) + "</section>",
        *(_section(key, data[key]) for key in sections),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
