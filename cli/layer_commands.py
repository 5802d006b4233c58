"""Commands that remove or add layers: ``drop-layers`` and ``grow``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

import onnxprune
from cli.command_io import MODEL, emit, finish, outputs
from cli.common_options import debug_option, json_option
from cli.verify_options import gate_options, gates_from, verify_options, verify_options_from
from onnxprune.paths import model_reads, model_writes

__all__ = ["drop_layers", "grow"]


@click.command("drop-layers")
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
    out = outputs(
        [*model_reads(model), params["calibration"], params["data"]],
        [*model_writes(output), report],
    )
    result = onnxprune.drop_layers(
        model, out(output), options, verify_options_from(params), gates_from(params)
    )
    emit(result, as_json, report, out)
    finish(result)


@click.command()
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
    out = outputs([*model_reads(model), params["data"]], [*model_writes(output), report])
    result = onnxprune.grow(
        model,
        out(output),
        verify_options_from(params),
        deeper=params["deeper"],
        wider=params["wider"],
        factor=params["factor"],
    )
    emit(result, as_json, report, out)
    finish(result)
