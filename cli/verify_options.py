"""Verification and gate options (``verify``, ``compress``, ``quantize``, ``export-edge``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.common_options import input_shape_option, input_shapes_from, json_option, stack
from onnxprune.groups import GroupOptions
from onnxprune.tasks import TASKS
from onnxprune.verify import Gates, VerifyOptions

__all__ = [
    "gate_options",
    "gates_from",
    "group_options_from",
    "verify_options",
    "verify_options_from",
]

verify_options = stack(
    click.option(
        "--data",
        type=click.Path(path_type=Path),
        default=None,
        help="Evaluation .npz (see README). Without it: synthetic inputs, agreement only.",
    ),
    click.option("--score-output", default=None, help="Model output to score (default: first)."),
    click.option(
        "--task",
        type=click.Choice(TASKS),
        default=None,
        help="What the scored output is (default: inferred and reported; top-1 agreement and "
        "accuracy only for classification).",
    ),
    input_shape_option,
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Inference batch for quality metrics (default 64; 1 when a model is dynamically "
        "quantized, whose predictions depend on the batch: give the deployment batch size).",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="onnxruntime intra-op threads; 0 lets onnxruntime choose.",
    ),
    click.option(
        "--latency-runs",
        type=click.IntRange(min=0),
        default=50,
        show_default=True,
        help="Interleaved timed runs per model (0 skips latency).",
    ),
    click.option("--latency-batch", type=click.IntRange(min=1), default=1, show_default=True),
    click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True),
    click.option(
        "--samples",
        type=click.IntRange(min=1),
        default=None,
        help="Verify on N samples: the first N of --data, or N synthetic inputs (default: all "
        "of --data; 32 synthetic, 4 for a model over 1 GiB).",
    ),
)

gate_options = stack(
    click.option(
        "--max-accuracy-drop",
        type=float,
        default=None,
        help="Fail (exit 1) if accuracy drops by more than this fraction (0.01 = 1 pt).",
    ),
    click.option(
        "--max-group-drop",
        type=float,
        default=None,
        help="Fail if any group's accuracy drops by more than this fraction.",
    ),
    click.option(
        "--max-eo-increase",
        type=float,
        default=None,
        help="Fail if any attribute's equalized-odds difference grows by more than this.",
    ),
    click.option(
        "--max-dp-increase",
        type=float,
        default=None,
        help="Fail if any attribute's demographic-parity difference grows by more than this.",
    ),
    click.option(
        "--min-group-agreement",
        type=float,
        default=None,
        help="Fail if any group's top-1 agreement with the baseline is below this fraction.",
    ),
    click.option(
        "--min-group-size",
        type=click.IntRange(min=1),
        default=30,
        show_default=True,
        help="Smaller groups are reported and marked but left out of gaps, worst group and gates.",
    ),
    click.option(
        "--min-group-positives",
        type=click.IntRange(min=1),
        default=10,
        show_default=True,
        help="A group's TPR (FPR) on fewer positives (negatives) is reported but left out of "
        "the equalized-odds difference and --max-eo-increase.",
    ),
    click.option(
        "--group-cross",
        multiple=True,
        metavar="A,B|all",
        help="Also report the intersection of these group attributes (e.g. race,sex; "
        "repeatable), or 'all' for every pair.",
    ),
    click.option(
        "--bootstrap",
        type=click.IntRange(min=0),
        default=1000,
        show_default=True,
        help="Paired-bootstrap resamples for each group's accuracy-drop interval (0: none).",
    ),
    click.option("--bootstrap-seed", type=int, default=0, show_default=True),
    click.option(
        "--min-agreement",
        type=float,
        default=None,
        help="Fail if top-1 agreement with the baseline is below this fraction.",
    ),
    click.option(
        "--min-cosine",
        type=float,
        default=None,
        help="Fail if the mean output cosine to the baseline is below this.",
    ),
    click.option(
        "--report",
        type=click.Path(path_type=Path),
        default=None,
        help="Write the JSON report here.",
    ),
    json_option,
)


def verify_options_from(params: dict[str, Any]) -> VerifyOptions:
    return VerifyOptions(
        data=params["data"],
        output=params["score_output"],
        batch_size=params["batch_size"],
        threads=params["threads"],
        latency_runs=params["latency_runs"],
        latency_warmup=params["warmup"],
        latency_batch=params["latency_batch"],
        synthetic_samples=params["samples"],
        data_samples=params["samples"],
        task=params["task"],
        input_shapes=input_shapes_from(params) or None,
        groups=group_options_from(params),
    )


def group_options_from(params: dict[str, Any]) -> GroupOptions:
    """Group settings (from ``gate_options``; defaults for commands without them)."""
    options = GroupOptions(
        min_group_size=params.get("min_group_size", 30),
        min_group_positives=params.get("min_group_positives", 10),
        cross=tuple(params.get("group_cross") or ()),
        bootstrap=params.get("bootstrap", 1000),
        seed=params.get("bootstrap_seed", 0),
    )
    options.validate()
    return options


def gates_from(params: dict[str, Any]) -> Gates:
    return Gates(
        max_accuracy_drop=params["max_accuracy_drop"],
        max_group_drop=params["max_group_drop"],
        min_agreement=params["min_agreement"],
        min_cosine=params["min_cosine"],
        max_eo_increase=params["max_eo_increase"],
        max_dp_increase=params["max_dp_increase"],
        min_group_agreement=params["min_group_agreement"],
    )
