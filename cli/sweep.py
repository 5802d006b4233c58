"""The ``sweep`` command: every grid point verified, CSV + JSON table, Pareto front."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import click

from cli.common_options import debug_option
from cli.errors import EXIT_GATE_FAILED
from cli.prune_options import calibration_options_from, prune_options, prune_options_from
from cli.quantize_options import COMPRESS_QUANTIZE
from cli.verify_options import gate_options, gates_from, verify_options, verify_options_from
from onnxprune.errors import InputError
from onnxprune.paths import check_writes, model_reads
from onnxprune.report import write_json, write_text_atomic
from onnxprune.search import OBJECTIVES
from onnxprune.search.sweep import MAX_WORKERS, SweepOptions, run_sweep
from onnxprune.structured.pipeline import StructuredOptions

__all__ = ["sweep"]


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise InputError(f"{flag} '{text}' is not a comma-separated list of numbers") from None


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


CSV_COLUMNS = (
    "index",
    "method",
    "sparsity",
    "achieved_sparsity",
    "quantize",
    "objective",
    "bytes",
    "compressed_bytes",
    "accuracy_drop",
    "top1_agreement",
    "cosine_mean",
    "worst_group_drop",
    "passed",
    "pareto",
)


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _quantize_modes(text: str) -> tuple[str | None, ...]:

    modes = []
    for name in _names(text):
        if name != "float" and name not in COMPRESS_QUANTIZE:
            choices = ", ".join(["float", *COMPRESS_QUANTIZE])
            raise InputError(f"--quantize '{name}' is not one of {choices}")
        modes.append(None if name == "float" else COMPRESS_QUANTIZE[name])
    return tuple(modes) or (None,)


def _sweep_lines(table: dict) -> list[str]:
    lines = [
        f"onnxprune sweep: {table['model']} (objective {table['objective']})",
        f"  {'method':<10} {'sparsity':>8} {'quantize':>8} {'objective':>12} "
        f"{'acc drop':>8} {'cosine':>7} {'worst grp':>9}  result",
    ]
    for row in table["rows"]:

        def num(value: float | None, spec: str) -> str:
            return "n/a" if value is None else format(value, spec)

        lines.append(
            f"  {row['method']:<10} {row['sparsity']:>8.3f} {row['quantize'] or 'float':>8} "
            f"{num(row['objective'], '.6g'):>12} {num(row['accuracy_drop'], '.4f'):>8} "
            f"{num(row['cosine_mean'], '.4f'):>7} {num(row['worst_group_drop'], '.4f'):>9}  "
            f"{'pass' if row['passed'] else 'FAIL'}{'  pareto' if row['pareto'] else ''}"
        )
    lines.append(f"Verdict: {table['verdict']}")
    return lines


def _default_method(params: dict[str, Any]) -> str:
    """Structured sweeps rank units by an importance, unstructured ones by a method."""
    if not params["structured"]:
        return "magnitude"
    options = StructuredOptions(importance=params["importance"])
    return options.resolved_importance(params["calibration"] is not None)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="Table prefix: writes PREFIX.csv and PREFIX.json.",
)
@click.option("--sparsities", required=True, help="Comma list, e.g. 0.3,0.5,0.7.")
@click.option(
    "--methods",
    default=None,
    help="Comma list of methods (default magnitude; with --structured: importances, default "
    "the --importance value).",
)
@click.option(
    "--quantize",
    "quantize_list",
    default="float",
    show_default=True,
    help="Comma list: float, int8, int8-static, int4.",
)
@click.option("--objective", type=click.Choice(OBJECTIVES), default="size", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    default=1,
    show_default=True,
    help="Local worker processes.",
)
@click.option(
    "--ray",
    default=None,
    metavar="auto|ADDRESS|local",
    help="Run on a Ray cluster (needs the 'ray' extra); 'local' starts one here.",
)
@prune_options
@verify_options
@gate_options
@debug_option
def sweep(model: Path, output: Path, report: Path | None, as_json: bool, **params: Any) -> None:
    """Verify every combination of sparsity, method and quantization; write a CSV and JSON
    table with the Pareto front marked (exit 1 if no combination holds the budget)."""
    for name in ("target_sparsity", "pattern", "replay", "manifest"):
        if params[name] is not None:
            raise InputError(f"--{name.replace('_', '-')} does not go with sweep")
    options = SweepOptions(
        sparsities=_floats(params["sparsities"], "--sparsities"),
        methods=_names(params["methods"] or _default_method(params)),
        quantize=_quantize_modes(params["quantize_list"]),
        objective=params["objective"],
        workers=params["workers"],
        ray=params["ray"],
    )
    options.validate()
    json_path, csv_path = Path(f"{output}.json"), Path(f"{output}.csv")
    reads = [*model_reads(model), params["calibration"], params["data"]]
    check_writes(reads, [p for p in (json_path, csv_path, report) if p is not None])
    table = run_sweep(
        model,
        prune_options_from({**params, "target_sparsity": 0.0}),
        options,
        verify_options_from(params),
        gates_from(params),
        calibration_options_from(params),
    )
    write_json(json_path, table)
    write_text_atomic(csv_path, _csv(table["rows"]))
    if report is not None:
        write_json(report, table)
    click.echo(json.dumps(table, indent=1) if as_json else "\n".join(_sweep_lines(table)))
    if not table["passed"]:
        click.get_current_context().exit(EXIT_GATE_FAILED)
