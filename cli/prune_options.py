"""Pruning options (``prune``, ``compress``): unstructured, N:M and structured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cli.common_options import stack
from onnxprune.allocation import ALLOCATIONS
from onnxprune.calibration import CalibrationOptions
from onnxprune.errors import InputError
from onnxprune.pruning import PruneOptions, parse_pattern
from onnxprune.scoring import METHODS
from onnxprune.structured.importance import IMPORTANCE
from onnxprune.structured.pipeline import TARGETS, StructuredOptions

__all__ = [
    "calibration_options_from",
    "prune_options",
    "prune_options_from",
    "structured_options_from",
]

prune_options = stack(
    click.option(
        "--target-sparsity",
        type=float,
        default=None,
        help="Fraction of prunable weights to zero, in [0, 1). Default 0.5.",
    ),
    click.option(
        "--method",
        default="magnitude",
        show_default=True,
        help=f"Pruning method: {', '.join(METHODS)} (wanda, sparsegpt need --calibration).",
    ),
    click.option(
        "--scope",
        default=None,
        help="layer (= --allocation uniform) or global (one threshold for all layers).",
    ),
    click.option(
        "--allocation",
        default=None,
        help=f"Sparsity across layers: {', '.join(ALLOCATIONS)} (default uniform).",
    ),
    click.option(
        "--owl-lambda",
        type=float,
        default=0.08,
        show_default=True,
        help="OWL: layer sparsities span target +/- this.",
    ),
    click.option(
        "--calibration",
        type=click.Path(path_type=Path),
        default=None,
        help="Calibration .npz for data-aware methods (same format as --data).",
    ),
    click.option(
        "--calibration-mask",
        default=None,
        help="Input marking real positions (default: 'attention_mask' if the model has it).",
    ),
    click.option(
        "--sequential",
        is_flag=True,
        help="Data-aware methods: recalibrate after each stage on the already-pruned model.",
    ),
    click.option(
        "--calibration-batch-size",
        type=click.IntRange(min=1),
        default=16,
        show_default=True,
    ),
    click.option("--pattern", default=None, help="N:M sparsity, e.g. 2:4 (per layer)."),
    click.option(
        "--min-fan-in",
        type=int,
        default=16,
        show_default=True,
        help="Leave weights with fewer inputs per output alone (a first 3x3 conv on one "
        "channel has 9); 0 prunes everything.",
    ),
    click.option("--include", default=None, help="Regex: prune only weights/nodes matching it."),
    click.option("--exclude", default=None, help="Regex: leave weights/nodes matching it alone."),
    click.option(
        "--structured",
        is_flag=True,
        help="Remove whole channels, neurons and heads instead of zeroing weights.",
    ),
    click.option(
        "--target",
        "structured_target",
        default="all",
        show_default=True,
        help=f"With --structured: {', '.join(TARGETS)}.",
    ),
    click.option(
        "--importance",
        default=None,
        help=f"With --structured: {', '.join(IMPORTANCE)} (default obs with "
        "--calibration, else l2).",
    ),
    click.option(
        "--ridge",
        type=float,
        default=1e-2,
        show_default=True,
        help="With --structured: ridge (relative to the mean input energy) for obs and repair.",
    ),
    click.option(
        "--round-to",
        type=int,
        default=8,
        show_default=True,
        help="With --structured: keep channel/neuron counts at multiples of this (1 = exact).",
    ),
    click.option(
        "--sequential-groups",
        is_flag=True,
        help="With --structured: recalibrate after each group (slower; helped small CNNs).",
    ),
    click.option(
        "--reconstruct",
        is_flag=True,
        help="With --structured: repair consumers by least squares on calibration data.",
    ),
    click.option(
        "--manifest",
        type=click.Path(path_type=Path),
        default=None,
        help="With --structured: write the pruning decisions here (JSON, replayable).",
    ),
    click.option(
        "--replay",
        type=click.Path(path_type=Path),
        default=None,
        help="With --structured: apply the decisions of a manifest instead of scoring.",
    ),
)


def prune_options_from(params: dict[str, Any]) -> PruneOptions | StructuredOptions:
    if params["structured"]:
        return structured_options_from(params)
    for flag in ("manifest", "replay", "importance"):
        if params[flag] is not None:
            raise InputError(f"--{flag} goes with --structured")
    if params["reconstruct"]:
        raise InputError("--reconstruct goes with --structured")
    pattern = parse_pattern(params["pattern"]) if params["pattern"] else None
    target = params["target_sparsity"]
    options = PruneOptions(
        target_sparsity=0.5 if target is None and pattern is None else target,
        method=params["method"],
        allocation=_allocation(params["scope"], params["allocation"]),
        pattern=pattern,
        include=params["include"],
        exclude=params["exclude"],
        calibration=None if params["calibration"] is None else str(params["calibration"]),
        owl_lambda=params["owl_lambda"],
        sequential=params["sequential"],
        min_fan_in=params["min_fan_in"],
    )
    options.validate()
    return options


def structured_options_from(params: dict[str, Any]) -> StructuredOptions:
    for flag, default in (("method", "magnitude"), ("pattern", None), ("allocation", None)):
        if params[flag] != default:
            raise InputError(f"--{flag} applies to unstructured pruning, not --structured")
    target = params["target_sparsity"]
    options = StructuredOptions(
        target=params["structured_target"],
        sparsity=0.5 if target is None else target,
        importance=params["importance"],
        reconstruct=params["reconstruct"],
        ridge=params["ridge"],
        round_to=params["round_to"],
        sequential=params["sequential_groups"],
        include=params["include"],
        exclude=params["exclude"],
        calibration=None if params["calibration"] is None else str(params["calibration"]),
    )
    options.validate(options.calibration is not None)
    return options


def _allocation(scope: str | None, allocation: str | None) -> str:
    scopes = {"layer": "uniform", "global": "global"}
    if scope is not None and scope not in scopes:
        raise InputError(f"unknown scope '{scope}' (choose from layer, global)")
    from_scope = scopes.get(scope) if scope else None
    if from_scope and allocation and from_scope != allocation:
        raise InputError(f"--scope {scope} contradicts --allocation {allocation}")
    return allocation or from_scope or "uniform"


def calibration_options_from(params: dict[str, Any]) -> CalibrationOptions:
    return CalibrationOptions(
        batch_size=params["calibration_batch_size"],
        mask_input=params["calibration_mask"],
        threads=params.get("threads", 0),
    )
