"""Every command-line option stack, gathered from the per-topic modules.

Kept so ``from cli.options import ...`` goes on working; new code imports from the topic
module (``cli.common_options``, ``cli.prune_options``, ``cli.verify_options``,
``cli.report_options``, ``cli.quantize_options``).
"""

from __future__ import annotations

from cli.common_options import (
    debug_option,
    input_shape_option,
    input_shapes_from,
    json_option,
)
from cli.prune_options import (
    calibration_options_from,
    prune_options,
    prune_options_from,
    structured_options_from,
)
from cli.quantize_options import COMPRESS_QUANTIZE, quantize_options, quantize_options_from
from cli.report_options import explain_options, explain_options_from, html_from, html_option
from cli.verify_options import (
    gate_options,
    gates_from,
    group_options_from,
    verify_options,
    verify_options_from,
)

__all__ = [
    "COMPRESS_QUANTIZE",
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
    "structured_options_from",
    "verify_options",
    "verify_options_from",
]
