"""``compress --repair``: the repair stage between pruning and quantization.

``checked_stage_options`` runs before ``compress`` writes anything (options valid, calibration
data given, torch installed); ``run_repair_stage`` repairs the pruned model towards the model it
was pruned from (after clean-up, so tensor names match) and returns the report section.
"""

from __future__ import annotations

import os
from dataclasses import replace

from onnxprune.repair.api import repair_file
from onnxprune.repair.extra import require_torch
from onnxprune.repair.options import RepairOptions

__all__ = ["checked_stage_options", "run_repair_stage"]


def checked_stage_options(
    options: RepairOptions | None, calibration: str | None
) -> RepairOptions | None:
    """The stage's options with compress's calibration data (when none is set), checked."""
    if options is None:
        return None
    if options.calibration is None:
        options = replace(options, calibration=calibration)
    options.validate()
    require_torch()
    return options


def run_repair_stage(
    pruned: str | os.PathLike,
    source: str | os.PathLike,
    output: str | os.PathLike,
    options: RepairOptions,
) -> dict:
    """Repair ``pruned`` towards ``source`` (the model before pruning) into ``output``."""
    return repair_file(pruned, source, output, options)
