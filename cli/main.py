"""The ``onnxprune`` command line: a thin shell over ``onnxprune``'s public API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

import onnxprune
from cli.command_io import MODEL, emit, finish, outputs, report_refusal
from cli.common_options import debug_option, input_shape_option, input_shapes_from, json_option
from cli.edge_commands import export_edge_command, report_command
from cli.errors import OneLineErrorGroup
from cli.layer_commands import drop_layers, grow
from cli.prune_options import calibration_options_from, prune_options, prune_options_from
from cli.quantize_options import COMPRESS_QUANTIZE, quantize_options, quantize_options_from
from cli.repair_commands import adapt, repair
from cli.repair_options import repair_options, repair_options_from
from cli.report_options import explain_options, explain_options_from, html_from, html_option
from cli.search import auto_options, run_auto, sweep
from cli.verify_options import gate_options, gates_from, verify_options, verify_options_from
from onnxprune.explain import check_explainable, explain_report
from onnxprune.inspection import render_inspection
from onnxprune.paths import StagedOutputs, model_reads, model_writes
from onnxprune.quantize import MODES
from onnxprune.report import write_json
from onnxprune.resources import process_resources

__all__ = ["main"]


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxprune")
@debug_option
def main(debug: bool) -> None:
    """Prune, compress and verify ONNX models; every result is checked with onnxruntime."""


def _parse_dims(dims: tuple[str, ...]) -> dict[str, int]:
    parsed = {}
    for item in dims:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise onnxprune.InputError(f"--dim '{item}' is not NAME=N with N >= 1")
        parsed[name] = int(value)
    return parsed


def _replayed(model: Path, params: dict[str, Any]) -> dict[str, list[int]] | None:
    if params.get("replay") is None:
        return None
    try:
        data = json.loads(Path(params["replay"]).read_text())
    except (OSError, ValueError) as error:
        raise onnxprune.InputError(
            f"{params['replay']}: not a readable manifest ({error})"
        ) from error
    return onnxprune.decisions_from_manifest(data, model)


def _write_manifest(report: dict, model: Path, params: dict[str, Any], out: StagedOutputs) -> None:
    if params.get("manifest") is not None:
        write_json(out(params["manifest"]), onnxprune.manifest(report, model))


@main.command()
@MODEL
@json_option
@click.option(
    "--dim",
    "dims",
    multiple=True,
    help="NAME=N: value of a symbolic dimension for the MAC count (default 1).",
)
@input_shape_option
@debug_option
def inspect(model: Path, as_json: bool, dims: tuple[str, ...], debug: bool, **params: Any) -> None:
    """Show a model's signature, ops, MACs, parameters and which weights are prunable."""
    summary = onnxprune.inspect_model(model, _parse_dims(dims), input_shapes_from(params))
    summary["resources"] = process_resources()
    click.echo(json.dumps(summary, indent=2) if as_json else render_inspection(summary))


@main.command()
@MODEL
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@prune_options
@click.option(
    "--report", type=click.Path(path_type=Path), default=None, help="Write the JSON report here."
)
@json_option
@debug_option
def prune(model: Path, output: Path, report: Path | None, as_json: bool, **params: Any) -> None:
    """Prune MODEL (zero weights, or remove units with --structured) and write OUTPUT."""
    options = prune_options_from(params)
    out = outputs(
        [*model_reads(model), params["calibration"], params["replay"]],
        [*model_writes(output), report, params["manifest"]],
    )
    with report_refusal("prune", model, report, out):
        result = onnxprune.prune_file(
            model, out(output), options, calibration_options_from(params), _replayed(model, params)
        )
    _write_manifest(result, model, params, out)
    emit(result, as_json, report, out)


@main.command()
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@verify_options
@gate_options
@explain_options
@html_option
@debug_option
def verify(
    baseline: Path, candidate: Path, report: Path | None, as_json: bool, **params: Any
) -> None:
    """Compare CANDIDATE with BASELINE in onnxruntime: accuracy, agreement, groups, speed, size."""
    html = html_from(params)
    verify_options, explain = verify_options_from(params), explain_options_from(params)
    if explain is not None:
        check_explainable(baseline, verify_options, explain)
    out = outputs([*model_reads(baseline), *model_reads(candidate), params["data"]], [report, html])
    result = onnxprune.verify_files(baseline, candidate, verify_options, gates_from(params))
    if explain is not None:
        explain_report(result, baseline, candidate, verify_options, explain)
    emit(result, as_json, report, out, html)
    finish(result)


@main.command()
@MODEL
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Default: <stem>.compressed.onnx beside MODEL.",
)
@prune_options
@click.option(
    "--quantize",
    type=click.Choice(sorted(COMPRESS_QUANTIZE)),
    default=None,
    help="Quantize after pruning: int8 (dynamic), int8-static (QDQ, needs --calibration) or "
    "int4 (weight-only MatMul).",
)
@click.option("--quantize-exclude", default=None, help="Regex: nodes kept in float.")
@click.option(
    "--auto-exclude",
    is_flag=True,
    help="If a gate breaks after quantization, keep the most sensitive layers in "
    "float until it holds (needs --calibration and a gate).",
)
@quantize_options
@click.option(
    "--cleanup/--no-cleanup",
    default=True,
    show_default=True,
    help="Fold BatchNorm, drop Identity/Dropout, fold constants first.",
)
@click.option(
    "--optimize/--no-optimize",
    default=False,
    show_default=True,
    help="After pruning, fuse for onnxruntime (attention, LayerNorm, GELU) and also report "
    "speed against the dense model optimised the same way.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="After pruning, train the pruned weights back towards the model (distillation on "
    "--calibration; needs the 'repair' extra). Options: --repair-epochs, --repair-max-time, ...",
)
@repair_options("repair-")
@click.option(
    "--default-budget/--no-default-budget",
    default=True,
    show_default=True,
    help="With no gate given, check top-1 agreement (classifiers) or output cosine >= 0.95.",
)
@auto_options
@verify_options
@gate_options
@explain_options
@html_option
@debug_option
def compress(
    model: Path, output: Path | None, report: Path | None, as_json: bool, **params: Any
) -> None:
    """Clean up, prune, optionally quantize and verify MODEL; write the model and a report."""
    if run_auto(model, output, report, as_json, params):  # --auto: the search did it all
        return
    output, default_report = onnxprune.default_outputs(model, output)
    html = html_from(params)
    explain = explain_options_from(params)
    if explain is not None:
        check_explainable(model, verify_options_from(params), explain)
    out = outputs(
        [
            *model_reads(model),
            params["calibration"],
            params["data"],
            params["replay"],
            params["repair_validation"],
        ],
        [*model_writes(output), report or default_report, params["manifest"], html],
    )
    options = prune_options_from(params)
    quantize = None
    if params["quantize"]:
        mode = COMPRESS_QUANTIZE[params["quantize"]]
        quantize = quantize_options_from(params, mode, params["quantize_exclude"])
    with report_refusal("compress", model, report, out):
        result = onnxprune.compress_file(
            model,
            out(output),
            options,
            verify_options_from(params),
            gates_from(params),
            calibration_options_from(params),
            _replayed(model, params),
            quantize=quantize,
            cleanup=params["cleanup"],
            auto_exclude=params["auto_exclude"],
            default_budget=params["default_budget"],
            optimize=params["optimize"],
            repair=repair_options_from(params, params["calibration"], "repair_")
            if params["repair"]
            else None,
        )
    if explain is not None:
        explain_report(result, model, out(output), verify_options_from(params), explain)
    _write_manifest(result, model, params, out)
    emit(result, as_json, report or default_report, out, html)
    finish(result)


@main.command()
@MODEL
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="dynamic",
    show_default=True,
    help="dynamic int8, static int8 QDQ (needs --calibration), int4 weight-only.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="Calibration .npz: --mode static; int4 with --int8-ratio or --algorithm gptq.",
)
@click.option("--exclude", default=None, help="Regex: nodes kept in float.")
@click.option(
    "--auto-exclude",
    is_flag=True,
    help="If a gate breaks, keep the most sensitive layers in float until it holds.",
)
@quantize_options
@verify_options
@gate_options
@html_option
@debug_option
def quantize(model: Path, output: Path, report: Path | None, as_json: bool, **params: Any) -> None:
    """Quantize MODEL's weights with onnxruntime's tools, verify, and write OUTPUT."""
    options = quantize_options_from(params, params["mode"], params["exclude"])
    html = html_from(params)
    out = outputs(
        [*model_reads(model), params["calibration"], params["data"]],
        [*model_writes(output), report, html],
    )
    result = onnxprune.quantize_file(
        model,
        out(output),
        options,
        verify_options_from(params),
        gates_from(params),
        auto_exclude=params["auto_exclude"],
    )
    emit(result, as_json, report, out, html)
    finish(result)


for command in (
    sweep,
    report_command,
    export_edge_command,
    drop_layers,
    grow,
    repair,
    adapt,
):
    main.add_command(command)

if __name__ == "__main__":
    main()
