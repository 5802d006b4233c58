"""Per-layer sparsity curves: how much the model output moves when one layer alone is pruned.

Cheap first: for every prunable layer the search selects, and every sparsity level, the layer
alone is pruned (with the method being searched) in memory and the model runs in onnxruntime
on calibration samples; the cost is the output's normalised mean squared error against the
dense model, ``‖y - y₀‖² / ‖y₀‖²`` on the scored output. The sum of the layers' costs is the
allocation's estimate of a whole configuration; the verified search corrects it.
(``onnxprune.sensitivity`` ranks layers for int8 quantization by the same idea.)
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.calibration import CalibrationOptions
from onnxprune.data import Dataset
from onnxprune.errors import InputError, NothingToPrune
from onnxprune.macs import count_macs
from onnxprune.pruning import PruneOptions, prune_model
from onnxprune.runtime import run_dataset, tensor_outputs

__all__ = ["LayerCurve", "layer_table", "sparsity_curves"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerCurve:
    """One layer's cost (output NMSE) at each searched sparsity level (level 0 costs 0)."""

    name: str
    size: int
    macs: int
    errors: tuple[float, ...]

    def to_dict(self, levels: tuple[float, ...]) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "macs": self.macs,
            "nmse": {f"{level:g}": error for level, error in zip(levels, self.errors, strict=True)},
        }


def _session(model: ir.Model, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    data = ir.to_proto(model).SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _scored(model: ir.Model, data: Dataset, threads: int, output: str | None) -> np.ndarray:
    session = _session(model, threads)
    name = output or tensor_outputs(session)[0]
    return run_dataset(session, data, limit=data.samples)[name].astype(np.float64)


def layer_table(model: ir.Model, options: PruneOptions, calibration: Dataset | None) -> dict:
    """The layers ``options`` prune in ``model``: name -> (elements, MACs of its nodes)."""
    try:
        result = prune_model(model.clone(), replace(options, target_sparsity=0.0), calibration)
    except NothingToPrune as error:
        raise InputError(f"--auto: {error}") from error
    per_node = {layer["node"]: layer["macs"] or 0 for layer in count_macs(model)["layers"]}
    return {
        layer.name: (layer.size, sum(per_node.get(node, 0) for node in layer.nodes))
        for layer in result.layers
    }


def sparsity_curves(
    model: ir.Model,
    options: PruneOptions,
    levels: tuple[float, ...],
    calibration: Dataset,
    calibration_options: CalibrationOptions | None = None,
    output: str | None = None,
) -> list[LayerCurve]:
    """The cost curve of every layer ``options`` select, at ``levels`` (first level 0)."""
    calibration_options = calibration_options or CalibrationOptions()
    threads = calibration_options.threads
    table = layer_table(model, options, calibration)
    dense = _scored(model, calibration, threads, output)
    energy = float(np.sum(dense**2)) or 1.0
    curves = []
    for name, (size, macs) in table.items():
        errors = [0.0]
        for level in levels[1:]:
            single = replace(options, target_sparsity=level, include=f"^{re.escape(name)}$")
            working = model.clone()
            prune_model(working, single, calibration, calibration_options)
            pruned = _scored(working, calibration, threads, output)
            errors.append(float(np.sum((pruned - dense) ** 2)) / energy)
        curves.append(LayerCurve(name, size, macs, tuple(errors)))
        logger.info("curve %s: %s", name, ", ".join(f"{e:.3g}" for e in errors))
    return curves
