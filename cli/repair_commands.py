"""Commands that train weights (the ``repair`` extra): ``repair`` and ``adapt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.command_io import MODEL, emit, finish, outputs
from cli.common_options import debug_option
from cli.repair_options import repair_options, repair_options_from
from cli.verify_options import gate_options, gates_from, verify_options, verify_options_from
from onnxprune.paths import StagedOutputs, model_reads, model_writes, unstaged
from onnxprune.repair import repair as repair_models
from onnxprune.repair import require_torch
from onnxprune.repair.adapt import AdaptOptions
from onnxprune.repair.adapt import adapt as adapt_model
from onnxprune.repair.render import render_adapt, render_repair
from onnxprune.report import render_report, write_json

__all__ = ["adapt", "repair"]


def _emit_repair(report: dict, as_json: bool, report_path: Path | None, out: StagedOutputs):
    """``_emit`` with the repair (or adapt) table before the verification."""
    if as_json:
        emit(report, as_json, report_path, out)
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
    return outputs(reads, [*model_writes(output), report])


@click.command()
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
    finish(result)


@click.command()
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
    finish(result)
