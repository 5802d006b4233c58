"""Options shared by several commands, as decorators, and their conversion to library objects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxprune.allocation import ALLOCATIONS
from onnxprune.calibration import CalibrationOptions
from onnxprune.errors import InputError
from onnxprune.explain import ExplainOptions
from onnxprune.groups import GroupOptions
from onnxprune.html import INSTALL_HINT, require_matplotlib
from onnxprune.normalize import parse_input_shape
from onnxprune.pruning import PruneOptions, parse_pattern
from onnxprune.quant.options import CALIBRATE_METHOD_NAMES, INT4_ALGORITHMS, QuantizeOptions
from onnxprune.scoring import METHODS
from onnxprune.structured.importance import IMPORTANCE
from onnxprune.structured.pipeline import TARGETS, StructuredOptions
from onnxprune.tasks import TASKS
from onnxprune.verify import Gates, VerifyOptions

__all__ = [
    "calibration_options_from",
    "debug_option",
    "explain_options",
    "explain_options_from",
    "gate_options",
    "gates_from",
    "group_options_from",
    "html_from",
    "html_option",
    "input_shape_option",
    "input_shapes_from",
    "json_option",
    "prune_options",
    "prune_options_from",
    "quantize_options",
    "quantize_options_from",
    "verify_options",
    "verify_options_from",
]

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _stack(*decorators: Decorator) -> Decorator:
    def apply(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


debug_option = click.option(
    "--debug", is_flag=True, help="Log progress and show tracebacks on errors."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")

prune_options = _stack(
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

input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    help="NAME:d0,d1,... sets an input's dims for made-up inputs, shape inference and MACs "
    "(repeatable; NAME: alone for a 0-d input).",
)


def input_shapes_from(params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for text in params.get("input_shapes") or ():
        name, dims = parse_input_shape(text)
        if name in shapes:
            raise InputError(f"--input-shape {name} is given twice")
        shapes[name] = dims
    return shapes


verify_options = _stack(
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
)

gate_options = _stack(
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

html_option = click.option(
    "--html",
    type=click.Path(path_type=Path),
    default=None,
    help=f"Also write the report as one self-contained HTML page (needs matplotlib: "
    f"{INSTALL_HINT}).",
)


def html_from(params: dict[str, Any]) -> Path | None:
    """The ``--html`` path; refuses it up front when matplotlib is not installed."""
    path = params.get("html")
    if path is not None:
        require_matplotlib()
    return path


explain_options = _stack(
    click.option(
        "--explain",
        type=click.IntRange(min=1),
        default=None,
        metavar="N",
        help="Explain N evaluation samples (seeded) on both models by occlusion and report how "
        "far the explanations drift.",
    ),
    click.option("--explain-top-k", type=click.IntRange(min=1), default=5, show_default=True),
    click.option("--explain-seed", type=int, default=0, show_default=True),
    click.option(
        "--explain-patch",
        type=click.IntRange(min=1),
        default=None,
        help="Image patch side in pixels (default: at most 8x8 patches).",
    ),
    click.option(
        "--min-explanation-agreement",
        type=float,
        default=None,
        help="Fail (exit 1) if the explanations' mean top-k overlap is below this.",
    ),
)


def explain_options_from(params: dict[str, Any]) -> ExplainOptions | None:
    if params["explain"] is None:
        if params["min_explanation_agreement"] is not None:
            raise InputError("--min-explanation-agreement needs --explain N")
        return None
    options = ExplainOptions(
        samples=params["explain"],
        top_k=params["explain_top_k"],
        seed=params["explain_seed"],
        patch=params["explain_patch"],
        min_agreement=params["min_explanation_agreement"],
    )
    options.validate()
    return options


quantize_options = _stack(
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
        default="off",
        show_default=True,
        help="static: SmoothQuant off, auto (strength per layer group by calibration error) "
        "or a strength in (0, 1).",
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
        bias_correction=params["bias_correction"],
        symmetric=params["symmetric"],
        embeddings=params["embeddings"],
        int8_ratio=params["int8_ratio"],
        algorithm=params["algorithm"],
        max_evaluations=params["max_evaluations"],
    )
    options.validate()
    return options


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


def verify_options_from(params: dict[str, Any]) -> VerifyOptions:
    return VerifyOptions(
        data=params["data"],
        output=params["score_output"],
        batch_size=params["batch_size"],
        threads=params["threads"],
        latency_runs=params["latency_runs"],
        latency_warmup=params["warmup"],
        latency_batch=params["latency_batch"],
        task=params["task"],
        input_shapes=input_shapes_from(params) or None,
        groups=group_options_from(params),
    )


def group_options_from(params: dict[str, Any]) -> GroupOptions:
    """Group settings (from ``gate_options``; defaults for commands without them)."""
    options = GroupOptions(
        min_group_size=params.get("min_group_size", 30),
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
