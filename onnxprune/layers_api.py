"""File-level ``drop-layers`` and ``grow``: rewrite layers, write the model, verify it."""

from __future__ import annotations

import os

from onnxprune.droplayers import DropOptions, drop_layers_file
from onnxprune.errors import InputError
from onnxprune.grow import DeepenPass, WidenPass, find_group
from onnxprune.model_io import (
    check_distinct_output,
    load_model,
    model_files,
    save_model,
    uses_external_data,
)
from onnxprune.report import build_report
from onnxprune.verify import (
    Gates,
    VerifyOptions,
    prepare_dataset,
    prepare_verification,
    verified_report,
    verify_models,
)

__all__ = ["drop_layers", "grow"]

# A grown model must compute the same function: the largest output difference allowed.
GROW_TOLERANCE = 1e-4


def drop_layers(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: DropOptions,
    verify_options: VerifyOptions,
    gates: Gates | None = None,
) -> dict:
    """Remove the least influential residual blocks, verify, return the report."""
    options.validate()
    gates, dataset = prepare_verification(model, verify_options, gates)
    section = drop_layers_file(model, output, options)
    return verified_report(
        "drop-layers", model, output, verify_options, dataset, gates, drop_layers=section
    )


def grow(
    model: str | os.PathLike,
    output: str | os.PathLike,
    verify_options: VerifyOptions,
    deeper: str | None = None,
    wider: str | None = None,
    factor: float = 2.0,
) -> dict:
    """Insert an identity layer (``deeper``) or widen a layer (``wider``); verify the function
    is unchanged (max abs diff <= 1e-4, a gate) and return the report."""
    if (deeper is None) == (wider is None):
        raise InputError("give exactly one of --deeper NODE and --wider LAYER")
    working = load_model(model)
    external = uses_external_data(working)
    protected = model_files(model, working)
    check_distinct_output(output, protected, external)
    dataset = prepare_dataset(model, verify_options)
    if deeper is not None:
        rewrite = DeepenPass(deeper)
    else:
        rewrite = WidenPass(find_group(working, wider), factor)
    rewrite(working)
    save_model(working, output, protected=protected, external_data=external)
    verification = verify_models(model, output, verify_options, dataset)
    largest = max(verification["max_abs_diff_per_output"].values())
    gate = {
        "gate": "function_preserved_max_abs_diff",
        "limit": GROW_TOLERANCE,
        "value": largest,
        "passed": bool(largest <= GROW_TOLERANCE),
    }
    report = build_report("grow", model, output, verification=verification, gates=[gate])
    report["grow"] = rewrite.added
    return report
