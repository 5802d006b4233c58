"""The public API: the same operations as the command line, on paths or in-memory models.

``prune`` takes an ``onnx_ir.Model`` or an ``onnx.ModelProto`` and returns the same kind.
``prune_file``, ``verify_files`` and ``compress_file`` work on paths and never overwrite the
input model: outputs are written atomically and checked (ONNX checker, onnxruntime) first.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune.calibration import CalibrationOptions
from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.macs import count_macs
from onnxprune.model_io import (
    check_distinct_output,
    model_files,
    save_model,
    uses_external_data,
)
from onnxprune.normalize import load_normalized
from onnxprune.pruning import PruneOptions, PruneResult, prune_model
from onnxprune.report import build_report
from onnxprune.structured.pipeline import StructuredOptions, prune_structured
from onnxprune.verify import Gates, VerifyOptions, prepare_verification, verified_report

__all__ = [
    "decisions_from_manifest",
    "default_outputs",
    "manifest",
    "prune",
    "prune_file",
    "verify_files",
]

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


def _calibration_data(
    working: ir.Model, options: PruneOptions | StructuredOptions
) -> Dataset | None:
    if options.calibration is None:
        if isinstance(options, PruneOptions) and options.needs_calibration:
            raise InputError(
                f"--method {options.method} (allocation {options.allocation}) needs "
                "--calibration DATA.npz"
            )
        return None
    data = load_dataset(options.calibration, input_specs(working))
    for name, array in data.inputs.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(
                f"{options.calibration}: array '{name}' holds NaN or infinite values; pruning "
                "statistics computed from them would write non-finite weights"
            )
    return data


def _prune_structured(
    working: ir.Model,
    options: StructuredOptions,
    calibration: Dataset | None,
    calibration_options: CalibrationOptions,
    decisions: dict[str, list[int]] | None,
) -> dict:
    macs_before = count_macs(working)["total"]
    result = prune_structured(working, options, calibration, calibration_options, decisions)
    macs_after = count_macs(working)["total"]
    return {
        "mode": "structured",
        **result.to_dict(),
        "macs": {
            "before": macs_before,
            "after": macs_after,
            "reduction": macs_before / macs_after if macs_after else None,
            "note": "per sample; symbolic dimensions counted as 1",
        },
    }


def prune_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: PruneOptions | StructuredOptions,
    calibration_options: CalibrationOptions | None = None,
    decisions: dict[str, list[int]] | None = None,
) -> dict:
    """Prune the model at ``model`` into ``output``; return the report.

    ``options`` selects unstructured (``PruneOptions``) or structured (``StructuredOptions``)
    pruning; ``decisions`` replays a structured manifest's kept units.
    """
    if isinstance(options, PruneOptions):
        options.validate()
    else:
        options.validate(options.calibration is not None)
    working = load_normalized(model)
    calibration = _calibration_data(working, options)
    external = uses_external_data(working)
    protected = model_files(model, working)
    check_distinct_output(output, protected, external)
    calibration_options = calibration_options or CalibrationOptions()
    if isinstance(options, StructuredOptions):
        pruning = _prune_structured(working, options, calibration, calibration_options, decisions)
    else:
        pruning = {
            "mode": "unstructured",
            **prune_model(working, options, calibration, calibration_options).to_dict(),
        }
    # the pruned weights were streamed to a scratch file laid out as the output's: moved, not copied
    save_model(working, output, protected=protected, external_data=external, move_scratch=True)
    return build_report("prune", model, output, pruning=pruning)


def manifest(report: dict, model: str | os.PathLike) -> dict:
    """A replayable record of a structured pruning run: kept units per group."""
    pruning = report["pruning"]
    return {
        "schema_version": 1,
        "model_sha256": file_sha256(model),
        "options": pruning["options"],
        "groups": {group["id"]: group["kept"] for group in pruning["groups"]},
    }


def decisions_from_manifest(data: dict, model: str | os.PathLike) -> dict[str, list[int]]:
    """The kept units of a manifest, after checking it was made for this very model file."""
    if data.get("schema_version") != 1 or not isinstance(data.get("groups"), dict):
        raise InputError("manifest: not an onnxprune structured manifest (schema_version 1)")
    if data.get("model_sha256") != file_sha256(model):
        raise InputError(f"manifest was recorded for another model than {model}")
    return {str(k): [int(i) for i in v] for k, v in data["groups"].items()}


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(
    baseline: str | os.PathLike,
    candidate: str | os.PathLike,
    options: VerifyOptions,
    gates: Gates | None = None,
) -> dict:
    """Verify ``candidate`` against ``baseline``; return the report (``passed`` per gates)."""
    gates, dataset = prepare_verification(baseline, options, gates)
    return verified_report("verify", baseline, candidate, options, dataset, gates)
