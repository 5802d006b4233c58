"""Quantization options (``quantize``, ``compress --quantize``)."""

from __future__ import annotations

from typing import Any

import click

from cli.common_options import stack
from onnxprune.quant.options import (
    CALIBRATE_METHOD_NAMES,
    INT4_ALGORITHMS,
    MUL_BUDGET,
    QuantizeOptions,
    parse_mul_budget,
)

__all__ = ["COMPRESS_QUANTIZE", "quantize_options", "quantize_options_from"]

MUL_BUDGET_TEXT = "off" if MUL_BUDGET is None else str(MUL_BUDGET)

quantize_options = stack(
    click.option(
        "--per-channel/--per-tensor",
        default=True,
        show_default=True,
        help="Quantization scale per output channel or per tensor (int8 modes).",
    ),
    click.option(
        "--block-size",
        type=int,
        default=32,
        show_default=True,
        help="int4: weights per quantization block along the input axis.",
    ),
    click.option(
        "--calibrate-method",
        type=click.Choice(CALIBRATE_METHOD_NAMES),
        default="minmax",
        show_default=True,
        help="static: how activation ranges are chosen from the calibration data.",
    ),
    click.option(
        "--smooth",
        default="0.95",
        show_default=True,
        help="static: SmoothQuant off, auto (strength per layer group by calibration error) "
        "or a strength in (0, 1), used per layer group where it lowers the simulated error.",
    ),
    click.option(
        "--mul-budget",
        default=MUL_BUDGET_TEXT,
        show_default=True,
        help="static: SmoothQuant scales that cannot be folded cost a Mul at run time; drop "
        "those Muls while the calibration output cosine stays within this of keeping all "
        "(off: keep every Mul).",
    ),
    click.option(
        "--bias-correction/--no-bias-correction",
        default=True,
        show_default=True,
        help="static: put each int8 layer's mean output shift back into its bias.",
    ),
    click.option(
        "--symmetric/--asymmetric",
        default=False,
        show_default=True,
        help="int4: symmetric or asymmetric (zero point) blocks.",
    ),
    click.option(
        "--embeddings/--no-embeddings",
        default=True,
        show_default=True,
        help="static, int4: also quantize embedding tables (GatherBlockQuantized).",
    ),
    click.option(
        "--int8-ratio",
        type=float,
        default=0.0,
        show_default=True,
        help="int4: fraction of MatMuls, the most sensitive by calibration error, kept at 8 bits.",
    ),
    click.option(
        "--algorithm",
        type=click.Choice(INT4_ALGORITHMS),
        default="rtn",
        show_default=True,
        help="int4: rtn (round to nearest), hqq (data-free), gptq (needs --calibration).",
    ),
    click.option(
        "--max-evaluations",
        type=int,
        default=8,
        show_default=True,
        help="--auto-exclude: at most this many re-quantize-and-verify rounds.",
    ),
)

# compress --quantize choices -> quantization mode
COMPRESS_QUANTIZE = {"int8": "dynamic", "int8-static": "static", "int4": "int4"}


def quantize_options_from(params: dict[str, Any], mode: str, exclude: str | None):
    calibration = params.get("calibration")
    options = QuantizeOptions(
        mode=mode,
        per_channel=params["per_channel"],
        exclude=exclude,
        block_size=params["block_size"],
        calibration=None if calibration is None else str(calibration),
        calibrate_method=params["calibrate_method"],
        smooth=params["smooth"],
        mul_budget=parse_mul_budget(params.get("mul_budget", MUL_BUDGET_TEXT)),
        bias_correction=params["bias_correction"],
        symmetric=params["symmetric"],
        embeddings=params["embeddings"],
        int8_ratio=params["int8_ratio"],
        algorithm=params["algorithm"],
        max_evaluations=params["max_evaluations"],
    )
    options.validate()
    return options
