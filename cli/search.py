"""``compress --auto`` options and the ``sweep`` command (``onnxprune.search``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import onnxprune
from cli.errors import EXIT_GATE_FAILED
from cli.options import (
    calibration_options_from,
    debug_option,
    gate_options,
    gates_from,
    prune_options,
    prune_options_from,
    verify_options,
    verify_options_from,
)
from cli.repair_options import repair_options_from
from onnxprune.errors import InputError
from onnxprune.paths import StagedOutputs, check_writes, model_reads, model_writes, unstaged
from onnxprune.report import render_report, to_json, write_json, write_text_atomic
from onnxprune.search import OBJECTIVES, SCHEDULES, AutoOptions, auto_compress
from onnxprune.search.sweep import MAX_WORKERS, SweepOptions, run_sweep

__all__ = ["auto_options", "run_auto", "sweep"]


def _stack(*decorators: Callable) -> Callable:
    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise InputError(f"{flag} '{text}' is not a comma-separated list of numbers") from None


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


auto_options = _stack(
    click.option(
        "--auto",
        is_flag=True,
        help="Search sparsity per layer, method and allocation for the best --objective whose "
        "gates hold (selection half of --data; confirmed on the other half).",
    ),
    click.option("--objective", type=click.Choice(OBJECTIVES), default="size", show_default=True),
    click.option(
        "--max-evals",
        type=click.IntRange(min=1),
        default=None,
        help="--auto: most candidates verified.",
    ),
    click.option("--max-time", type=float, default=None, help="--auto: seconds for the search."),
    click.option("--seed", type=int, default=0, show_default=True, help="--auto: split seed."),
    click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default="oneshot",
        show_default=True,
        help="--auto: gradual raises sparsity in steps (repairing in between with --repair) "
        "and stops at the last step whose gates hold.",
    ),
    click.option(
        "--search-methods",
        default=None,
        help="--auto: comma list (default magnitude, and wanda, sparsegpt with --calibration).",
    ),
    click.option(
        "--search-precisions",
        default=None,
        help="--auto: comma list of float, int8 (default float; int8,float for latency).",
    ),
    click.option(
        "--search-log",
        type=click.Path(path_type=Path),
        default=None,
        help="--auto: JSONL log (default <output>.search.jsonl).",
    ),
    click.option(
        "--search-margin",
        type=float,
        default=0.2,
        show_default=True,
        help="--auto: on the selection half, drop limits are tightened by this fraction "
        "(minimum agreement/cosine moved as far towards 1), against the winner's curse.",
    ),
    click.option(
        "--search-tolerance",
        type=float,
        default=0.02,
        show_default=True,
        help="--auto: candidates whose objective is within this fraction of the best are "
        "chosen between by worst-group drop, then accuracy drop (selection half).",
    ),
    click.option("--resume", is_flag=True, help="--auto: reuse the candidates of --search-log."),
)

# compress options that fix what --auto searches, with their defaults
_FIXED = {
    "target_sparsity": None,
    "pattern": None,
    "structured": False,
    "quantize": None,
    "optimize": False,
    "replay": None,
    "manifest": None,
    "auto_exclude": False,
    "explain": None,
    "html": None,
    "allocation": None,
    "scope": None,
}


_AUTO_ONLY = {
    "objective": "size",
    "max_evals": None,
    "max_time": None,
    "seed": 0,
    "schedule": "oneshot",
    "search_methods": None,
    "search_precisions": None,
    "search_log": None,
    "resume": False,
    "search_margin": 0.2,
    "search_tolerance": 0.02,
}


def _auto_options(params: dict[str, Any], output: Path) -> AutoOptions:
    for name, default in _FIXED.items():
        if params.get(name, default) != default:
            flag = name.replace("_", "-")
            raise InputError(f"--{flag} does not go with --auto (the search chooses it)")
    log = params["search_log"] or Path(f"{output}.search.jsonl")
    return AutoOptions(
        log=str(log),
        objective=params["objective"],
        methods=_names(params["search_methods"]),
        precisions=_names(params["search_precisions"]),
        max_evals=params["max_evals"],
        max_time=params["max_time"],
        seed=params["seed"],
        schedule=params["schedule"],
        resume=params["resume"],
        margin=params["search_margin"],
        tolerance=params["search_tolerance"],
    )


def _search_lines(report: dict) -> list[str]:
    search = report["search"]
    lines = [
        f"Search ({search['objective']}, {search['schedule']}, methods "
        f"{', '.join(search['methods'])}): {search['candidates_evaluated']} candidates "
        f"evaluated, {search['candidates_from_log']} from the log, {search['seconds']:.1f} s"
        + (f" (stopped: {search['stopped']})" if search["stopped"] else "")
    ]
    if "chosen" in search:
        chosen = search["chosen"]
        lines.append(
            f"  chosen: {chosen['method']}, sparsity {chosen['sparsity']:.2%} (unstructured: of "
            "the prunable weights; structured: of the units)"
        )
        for name, gap in search["gap"].items():
            lines.append(
                f"  {name}: selection {search['selection'][name]:.4f}, "
                f"confirmation {search['confirmation'][name]:.4f} (gap {gap:+.4f})"
            )
    lines.append(f"Verdict: {search['verdict']}")
    return lines


def run_auto(
    model: Path, output: Path | None, report_path: Path | None, as_json: bool, params: dict
) -> bool:
    """``compress --auto``: search, write the chosen model and the report, exit 1 unless the
    gates hold on the confirmation half. False (nothing done) without ``--auto``, after
    refusing options that only ``--auto`` uses."""
    if not params.pop("auto"):
        for name, default in _AUTO_ONLY.items():
            if params[name] != default:
                raise InputError(f"--{name.replace('_', '-')} goes with --auto")
        return False
    output, default_report = onnxprune.default_outputs(model, output)
    report_path = report_path or default_report
    options = _auto_options(params, output)
    reads = [*model_reads(model), params["calibration"], params["data"]]
    check_writes(reads, [*model_writes(output), report_path, Path(options.log)])
    staged = StagedOutputs([*model_writes(output), report_path])
    click.get_current_context().call_on_close(staged.discard)
    repair = (
        repair_options_from(params, params["calibration"], "repair_") if params["repair"] else None
    )
    result = auto_compress(
        model,
        staged(output),
        prune_options_from({**params, "target_sparsity": 0.0}),
        options,
        verify_options_from(params),
        gates_from(params),
        calibration_options_from(params),
        repair,
    )
    result = unstaged(result)
    write_json(staged(report_path), result)
    staged.commit()
    text = (
        to_json(result).rstrip("\n")
        if as_json
        else "\n".join([render_report(result), *_search_lines(result)])
    )
    click.echo(text)
    if not result["passed"]:
        click.get_current_context().exit(EXIT_GATE_FAILED)
    return True


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
    from cli.options import COMPRESS_QUANTIZE

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
    default="magnitude",
    show_default=True,
    help="Comma list of methods (with --structured: importances).",
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
        methods=_names(params["methods"]),
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
