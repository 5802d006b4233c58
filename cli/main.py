"""The ``onnxprune`` command line: a thin shell over ``onnxprune``'s public API."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

import onnxprune
from cli.errors import EXIT_GATE_FAILED, OneLineErrorGroup
from cli.options import (
    COMPRESS_QUANTIZE,
    calibration_options_from,
    debug_option,
    explain_options,
    explain_options_from,
    gate_options,
    gates_from,
    html_from,
    html_option,
    input_shape_option,
    input_shapes_from,
    json_option,
    prune_options,
    prune_options_from,
    quantize_options,
    quantize_options_from,
    verify_options,
    verify_options_from,
)
from cli.repair_options import repair_options, repair_options_from
from cli.search import auto_options, run_auto, sweep
from onnxprune.edge import (
    EdgeOptions,
    export_edge,
    package_files,
    package_manifest,
    render_package,
)
from onnxprune.explain import check_explainable, explain_report
from onnxprune.html import load_report, require_matplotlib, write_html
from onnxprune.inspection import render_inspection
from onnxprune.ort_format import PLATFORMS, OrtOptions
from onnxprune.paths import StagedOutputs, check_writes, model_reads, model_writes, unstaged
from onnxprune.quantize import MODES
from onnxprune.repair import repair as repair_models
from onnxprune.repair import require_torch
from onnxprune.repair.adapt import AdaptOptions
from onnxprune.repair.adapt import adapt as adapt_model
from onnxprune.repair.render import render_adapt, render_repair
from onnxprune.report import build_report, render_report, to_json, write_json
from onnxprune.resources import process_resources

__all__ = ["main"]

MODEL = click.argument("model", type=click.Path(path_type=Path))


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxprune")
@debug_option
def main(debug: bool) -> None:
    """Prune, compress and verify ONNX models; every result is checked with onnxruntime."""


def _outputs(reads: list[Any], writes: list[Any]) -> StagedOutputs:
    """Check every destination against every file read, before any work; stage them.

    The staged files are removed when the command ends without ``_emit`` committing them.
    """
    destinations = [Path(w) for w in writes if w is not None]
    check_writes(reads, destinations)
    staged = StagedOutputs(destinations)
    click.get_current_context().call_on_close(staged.discard)
    return staged


def _emit(
    report: dict,
    as_json: bool,
    report_path: Path | None,
    out: StagedOutputs,
    html: Path | None = None,
) -> None:
    """Write the report (and its HTML page) beside the staged outputs, move them all into
    place, then print. The report says what the command cost (peak memory, wall time)."""
    report = {**unstaged(report), "resources": process_resources()}
    if report_path is not None:
        write_json(out(report_path), report)
    if html is not None:
        write_html(out(html), report)
    out.commit()
    click.echo(to_json(report).rstrip("\n") if as_json else render_report(report))
    if html is not None and not as_json:
        click.echo(f"HTML report: {html}")


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


def _write_manifest(
    report: dict, model: Path, params: dict[str, Any], out: StagedOutputs
) -> None:
    if params.get("manifest") is not None:
        write_json(out(params["manifest"]), onnxprune.manifest(report, model))


@contextlib.contextmanager
def _report_refusal(
    command: str, model: Path, report_path: Path | None, out: StagedOutputs
) -> Iterator[None]:
    """When pruning finds nothing to do (exit 2), still write ``--report`` with every reason,
    as the issue asks: the one output of an exit 2 (no model is written)."""
    try:
        yield
    except onnxprune.NothingToPrune as error:
        if report_path is not None:
            report = build_report(command, model, pruning=error.pruning)
            write_json(out(report_path), {**report, "passed": False, "error": str(error)})
            out.commit()
        raise


def _finish(report: dict) -> None:
    if not report["passed"]:
        click.get_current_context().exit(EXIT_GATE_FAILED)


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
    out = _outputs(
        [*model_reads(model), params["calibration"], params["replay"]],
        [*model_writes(output), report, params["manifest"]],
    )
    with _report_refusal("prune", model, report, out):
        result = onnxprune.prune_file(
            model, out(output), options, calibration_options_from(params), _replayed(model, params)
        )
    _write_manifest(result, model, params, out)
    _emit(result, as_json, report, out)


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
    out = _outputs(
        [*model_reads(baseline), *model_reads(candidate), params["data"]], [report, html]
    )
    result = onnxprune.verify_files(baseline, candidate, verify_options, gates_from(params))
    if explain is not None:
        explain_report(result, baseline, candidate, verify_options, explain)
    _emit(result, as_json, report, out, html)
    _finish(result)


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
    out = _outputs(
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
    with _report_refusal("compress", model, report, out):
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
    _emit(result, as_json, report or default_report, out, html)
    _finish(result)


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
    out = _outputs(
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
    _emit(result, as_json, report, out, html)
    _finish(result)


@main.command("report")
@click.argument("report_file", metavar="REPORT", type=click.Path(path_type=Path))
@click.option(
    "--html",
    type=click.Path(path_type=Path),
    required=True,
    help="Write the report as one self-contained HTML page here.",
)
@debug_option
def report_command(report_file: Path, html: Path, debug: bool) -> None:
    """Render a JSON report (any command's --report) as a self-contained HTML page."""
    require_matplotlib()
    out = _outputs([report_file], [html])
    write_html(out(html), load_report(report_file))
    out.commit()
    click.echo(f"HTML report: {html}")


def _package_folder(folder: Path) -> None:
    """Create the package folder (its parent must exist); removed again if left empty."""
    if folder.is_dir():
        return
    if folder.exists() or not folder.parent.is_dir():
        raise onnxprune.InputError(f"{folder}: not a folder, or its parent folder does not exist")
    folder.mkdir()

    def remove_if_empty() -> None:
        with contextlib.suppress(OSError):
            folder.rmdir()

    click.get_current_context().call_on_close(remove_if_empty)


@main.command("export-edge")
@MODEL
@click.option(
    "-o",
    "--output",
    "folder",
    type=click.Path(path_type=Path),
    required=True,
    help="Package folder (created if missing; files in it are replaced).",
)
@click.option("--platform", type=click.Choice(PLATFORMS), default="amd64", show_default=True)
@click.option(
    "--nchwc",
    is_flag=True,
    help="amd64: keep onnxruntime's NCHWc layout transform, blocked for THIS machine's vector "
    "width (only when the target CPU is the same kind).",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    default=None,
    help="The original model: verify the package's model against it and apply the gates.",
)
@click.option("--parity-atol", type=float, default=1e-4, show_default=True)
@click.option("--parity-rtol", type=float, default=1e-3, show_default=True)
@click.option("--html/--no-html", "with_html", default=True, show_default=True)
@verify_options
@gate_options
@debug_option
def export_edge_command(
    model: Path, folder: Path, report: Path | None, as_json: bool, **params: Any
) -> None:
    """Package MODEL for onnxruntime on the edge: model.ort, its operator config, a report and
    a manifest of hashes in OUTPUT; the .ort must agree with the .onnx on the data."""
    options = EdgeOptions(
        OrtOptions(params["platform"], params["nchwc"]),
        params["parity_atol"],
        params["parity_rtol"],
        params["with_html"],
    )
    options.validate()
    if options.html:
        require_matplotlib()
    baseline = params["baseline"]
    external = len(model_reads(model)) > 1
    files = package_files(folder, external, options.html)
    _package_folder(folder)
    reads = [*model_reads(model), *(model_reads(baseline) if baseline else []), params["data"]]
    out = _outputs(reads, [*files, report])
    result = export_edge(
        model, folder, out, options, verify_options_from(params), baseline, gates_from(params)
    )
    result = unstaged(result)
    write_json(out(files[-3 if options.html else -2]), result)
    if options.html:
        write_html(out(files[-2]), result)
    manifest = package_manifest(
        result,
        {path.name: out(path) for path in files[:-1]},
        {**options.ort.describe(), "parity_atol": options.atol, "parity_rtol": options.rtol},
    )
    write_json(out(files[-1]), manifest)
    _emit(result, as_json, report, out)
    if not as_json:
        click.echo("\n".join(render_package(result, files)))
    _finish(result)


@main.command("drop-layers")
@MODEL
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--blocks", type=int, default=None, help="Remove this many residual blocks.")
@click.option(
    "--max-cosine-drop",
    type=float,
    default=None,
    help="Remove blocks while the output cosine on calibration data stays >= 1 - X.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    default=None,
    help="Calibration .npz used to score the blocks (required).",
)
@verify_options
@gate_options
@debug_option
def drop_layers(
    model: Path, output: Path, report: Path | None, as_json: bool, **params: Any
) -> None:
    """Remove the residual blocks (x + f(x)) of MODEL that change their input least."""
    options = onnxprune.DropOptions(
        blocks=params["blocks"],
        max_cosine_drop=params["max_cosine_drop"],
        calibration=None if params["calibration"] is None else str(params["calibration"]),
    )
    out = _outputs(
        [*model_reads(model), params["calibration"], params["data"]],
        [*model_writes(output), report],
    )
    result = onnxprune.drop_layers(
        model, out(output), options, verify_options_from(params), gates_from(params)
    )
    _emit(result, as_json, report, out)
    _finish(result)


@main.command()
@MODEL
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option(
    "--deeper",
    default=None,
    help="Insert an identity layer after this node (node or output tensor name).",
)
@click.option("--wider", default=None, help="Widen this layer (weight or node name).")
@click.option(
    "--factor",
    type=float,
    default=2.0,
    show_default=True,
    help="With --wider: new units = round(units * factor).",
)
@verify_options
@click.option("--report", type=click.Path(path_type=Path), default=None)
@json_option
@debug_option
def grow(model: Path, output: Path, report: Path | None, as_json: bool, **params: Any) -> None:
    """Grow MODEL by function-preserving insertion (--deeper) or Net2Net widening (--wider)."""
    out = _outputs([*model_reads(model), params["data"]], [*model_writes(output), report])
    result = onnxprune.grow(
        model,
        out(output),
        verify_options_from(params),
        deeper=params["deeper"],
        wider=params["wider"],
        factor=params["factor"],
    )
    _emit(result, as_json, report, out)
    _finish(result)


def _emit_repair(report: dict, as_json: bool, report_path: Path | None, out: StagedOutputs):
    """``_emit`` with the repair (or adapt) table before the verification."""
    if as_json:
        _emit(report, as_json, report_path, out)
        return
    report = unstaged(report)
    if report_path is not None:
        write_json(out(report_path), report)
    out.commit()
    lines = render_repair(report["repair"]) if "repair" in report else []
    lines += render_adapt(report["adapt"]) if "adapt" in report else []
    click.echo("\n".join([*lines, render_report(report)]))


def _training_outputs(
    student: Path, teacher: Path, params: dict[str, Any], output: Path, report: Path | None
) -> StagedOutputs:
    """Staged outputs of repair/adapt, checked against every file they read."""
    reads = [*model_reads(student), *model_reads(teacher)]
    reads += [params["calibration"], params["data"], params["validation"]]
    return _outputs(reads, [*model_writes(output), report])


@main.command()
@click.argument("student", type=click.Path(path_type=Path))
@click.option(
    "--teacher",
    type=click.Path(path_type=Path),
    required=True,
    help="The original model the student learns from.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    required=True,
    help="Calibration .npz to train on (inputs; optional label and group.<attribute>).",
)
@click.option(
    "--calibration-mask",
    default=None,
    help="Input marking real positions (default: 'attention_mask' if the model has it).",
)
@repair_options()
@verify_options
@gate_options
@debug_option
def repair(student: Path, output: Path, report: Path | None, as_json: bool, **params: Any):
    """Train STUDENT's weights (a pruned model) back towards --teacher, block by block; zeros,
    shapes and the graph stay as they are. Needs the 'repair' extra (torch)."""
    options = repair_options_from(params, params["calibration"])
    require_torch()
    teacher = params["teacher"]
    out = _training_outputs(student, teacher, params, output, report)
    result = repair_models(
        student, teacher, out(output), options, verify_options_from(params), gates_from(params)
    )
    _emit_repair(result, as_json, report, out)
    _finish(result)


@main.command()
@MODEL
@click.option(
    "--teacher",
    type=click.Path(path_type=Path),
    default=None,
    help="The model every step learns from and is measured against (default: MODEL).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@click.option("--calibration", type=click.Path(path_type=Path), required=True)
@click.option("--calibration-mask", default=None, help="Input marking real positions.")
@click.option("--max-steps", type=int, default=4, show_default=True, help="Most drop steps.")
@click.option(
    "--grow-after",
    default=None,
    help="If MODEL breaks the budget even after repair: grow --deeper after this node, repair "
    "(default: try up to 3 activation outputs and keep the best by validation).",
)
@repair_options()
@verify_options
@gate_options
@debug_option
def adapt(model: Path, output: Path, report: Path | None, as_json: bool, **params: Any):
    """Drop residual blocks (or grow) and repair, step by step, while the budget (gates on
    --data against the teacher) holds; every step taken or refused is reported."""
    options = AdaptOptions(
        repair_options_from(params, params["calibration"]),
        params["max_steps"],
        params["grow_after"],
    )
    options.validate()
    require_torch()
    teacher = params["teacher"] or model
    out = _training_outputs(model, teacher, params, output, report)
    result = adapt_model(
        model, out(output), options, verify_options_from(params), gates_from(params), teacher
    )
    _emit_repair(result, as_json, report, out)
    _finish(result)


main.add_command(sweep)

if __name__ == "__main__":
    main()
