"""The public API: the same operations as the command line, on paths or in-memory models.

``prune`` takes an ``onnx_ir.Model`` or an ``onnx.ModelProto`` and returns the same kind.
``prune_file``, ``verify_files`` and ``compress_file`` work on paths and never overwrite the
input model: outputs are written atomically and checked (ONNX checker, onnxruntime) first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TypeVar

import onnx
import onnx_ir as ir

from onnxprune.calibration import CalibrationOptions
from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.model_io import (
    check_distinct_output,
    load_model,
    model_files,
    save_model,
    uses_external_data,
)
from onnxprune.pruning import PruneOptions, PruneResult, prune_model
from onnxprune.report import build_report
from onnxprune.verify import Gates, VerifyOptions, evaluate_gates, prepare_dataset, verify_models

__all__ = ["compress_file", "default_outputs", "prune", "prune_file", "verify_files"]

logger = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", ir.Model, onnx.ModelProto)


def prune(model: ModelT, options: PruneOptions) -> tuple[ModelT, PruneResult]:
    """Prune a copy of ``model``; return the pruned model (same kind as given) and the result."""
    if isinstance(model, onnx.ModelProto):
        working = ir.serde.deserialize_model(model)
        result = prune_model(working, options)
        return ir.serde.serialize_model(working), result
    working = model.clone()
    return working, prune_model(working, options)


def default_outputs(
    model: str | os.PathLike, output: str | os.PathLike | None
) -> tuple[Path, Path]:
    """Output and report paths: ``<stem>.compressed.onnx`` beside the input by default."""
    model = Path(model)
    out = Path(output) if output else model.with_name(f"{model.stem}.compressed.onnx")
    return out, out.with_name(f"{out.stem}.report.json")


def _calibration_data(working: ir.Model, options: PruneOptions) -> Dataset | None:
    if options.calibration is None:
        if options.needs_calibration:
            raise InputError(
                f"--method {options.method} (allocation {options.allocation}) needs "
                "--calibration DATA.npz"
            )
        return None
    return load_dataset(options.calibration, input_specs(working))


def prune_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: PruneOptions,
    calibration_options: CalibrationOptions | None = None,
) -> dict:
    """Prune the model at ``model`` into ``output``; return the report."""
    options.validate()
    working = load_model(model)
    external = uses_external_data(working)
    protected = model_files(model)
    check_distinct_output(output, protected, external)
    calibration = _calibration_data(working, options)
    calibration_options = calibration_options or CalibrationOptions()
    result = prune_model(working, options, calibration, calibration_options)
    save_model(working, output, protected=protected, external_data=external)
    return build_report("prune", model, output, pruning=result.to_dict())


def verify_files(
    baseline: str | os.PathLike,
    candidate: str | os.PathLike,
    options: VerifyOptions,
    gates: Gates | None = None,
) -> dict:
    """Verify ``candidate`` against ``baseline``; return the report (``passed`` per gates)."""
    gates = gates or Gates()
    dataset = prepare_dataset(baseline, options)
    gates.check_applicable(dataset)
    verification = verify_models(baseline, candidate, options, dataset)
    return build_report(
        "verify",
        baseline,
        candidate,
        verification=verification,
        gates=evaluate_gates(gates, verification),
    )


def compress_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    prune_options: PruneOptions,
    verify_options: VerifyOptions,
    gates: Gates | None = None,
    calibration_options: CalibrationOptions | None = None,
) -> dict:
    """Prune ``model`` into ``output`` and verify it; return the combined report.

    Data and gates are checked before anything is written; the output is written even when a
    gate fails (the report says which), so the caller can inspect it.
    """
    gates = gates or Gates()
    prune_options.validate()
    dataset = prepare_dataset(model, verify_options)
    gates.check_applicable(dataset)
    if (
        prune_options.calibration is not None
        and verify_options.data is not None
        and Path(prune_options.calibration).resolve() == Path(verify_options.data).resolve()
    ):
        logger.warning(
            "warning: --calibration and --data are the same file; the verification is not "
            "on held-out samples"
        )
    report = prune_file(model, output, prune_options, calibration_options)
    verification = verify_models(model, output, verify_options, dataset)
    return build_report(
        "compress",
        model,
        output,
        pruning=report["pruning"],
        verification=verification,
        gates=evaluate_gates(gates, verification),
    )
