"""Weight quantization through onnxruntime's own tools, with onnxprune's choices on top.

* ``dynamic``: int8 weights, activations quantized at run time (``quantize_dynamic``).
* ``static``: transformer-aware int8 QDQ calibrated on a ``.npz`` dataset
  (``onnxprune.quant.static``: rule table of what stays float, per-channel weights, MinMax /
  Entropy / Percentile ranges, optional SmoothQuant, bias correction).
* ``int4``: weight-only 4-bit ``MatMulNBits`` plus ``GatherBlockQuantized`` embedding tables,
  optionally mixed with 8-bit layers and data-aware algorithms (``onnxprune.quant.int4``).

``quantize_model_file`` writes the result through ``model_io.save_model`` (atomic, checked by
the ONNX checker and onnxruntime) and returns the report section, which lists every layer's
precision and why. Nodes matching ``exclude`` (or named in ``extra_exclude``) stay in float.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import onnx
import onnx_ir as ir
from onnxruntime.quantization import QuantType, quantize_dynamic

from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.model_io import load_model, save_model, uses_external_data
from onnxprune.normalize import load_normalized
from onnxprune.quant.annotations import drop_shape_annotations_in_file
from onnxprune.quant.int4 import quantize_int4_model
from onnxprune.quant.large import quantize_streaming, streaming_refusal
from onnxprune.quant.options import MODES, QuantizeOptions
from onnxprune.quant.reader import DatasetReader
from onnxprune.quant.static import preprocess, quantize_static_file

__all__ = ["MODES", "NpzReader", "QuantizeOptions", "quantizable_nodes", "quantize_model_file"]

logger = logging.getLogger(__name__)
NpzReader = DatasetReader
_QUANTIZABLE = {
    "dynamic": ("MatMul", "Gemm", "Conv"),
    "static": ("MatMul", "Gemm", "Conv"),
    "int4": ("MatMul", "Gather"),
}


def quantizable_nodes(model: ir.Model, mode: str) -> list[str]:
    """Names of main-graph nodes the mode would quantize (ops with an initializer weight)."""
    constants = model.graph.initializers
    index = {"Gather": 0}
    names = []
    for node in model.graph:
        position = index.get(node.op_type, 1)
        if node.op_type not in _QUANTIZABLE[mode] or len(node.inputs) <= position:
            continue
        weight = node.inputs[position]
        if weight is not None and weight.name in constants:
            names.append(node.name or "")
    return names


def _dynamic(source: Path, target: Path, options: QuantizeOptions, excluded, external) -> dict:
    quantize_dynamic(
        source,
        target,
        per_channel=options.per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=sorted(excluded),
        use_external_data_format=external,
    )
    return {"shape_annotations_dropped": drop_shape_annotations_in_file(target)}


def _static(source, target, options: QuantizeOptions, excluded, calibration, external) -> dict:
    prepared = target.with_name("prepared.onnx")
    steps = preprocess(source, prepared, external)
    plan, summary = quantize_static_file(
        prepared,
        target,
        calibration,
        excluded,
        per_channel=options.per_channel,
        method=options.calibrate_method,
        smooth_alphas=options.smooth_alphas(),
        mul_budget=options.mul_budget,
        bias_correction=options.bias_correction,
        embeddings=options.embeddings,
        external=external,
    )
    layers = [d.as_dict() for d in plan]
    return {"pre_processing": steps, **summary, "layers": layers}


def _int4(proto: onnx.ModelProto, options: QuantizeOptions, excluded, calibration) -> tuple:
    model, plan, errors = quantize_int4_model(
        proto,
        excluded,
        block_size=options.block_size,
        symmetric=options.symmetric,
        algorithm=options.algorithm,
        embeddings=options.embeddings,
        int8_ratio=options.int8_ratio,
        data=calibration,
    )
    ranked = dict(sorted(errors.items(), key=lambda item: (-item[1], item[0])))
    return model, {"layers": [d.as_dict() for d in plan], "layer_errors": ranked}


def _int4_in_memory(source: ir.Model, options, excluded, calibration) -> tuple[ir.Model, dict]:
    # int4 works on the in-memory model: no temporary copies of a model onnxruntime's
    # weight-only quantizer reads and writes as a protobuf anyway.
    ir.external_data.load_to_model(source)
    proto, details = _int4(ir.serde.serialize_model(source), options, excluded, calibration)
    return ir.serde.deserialize_model(proto), details


def _run_tool(source, target, options, excluded, calibration, external) -> dict:
    if options.mode == "dynamic":
        return _dynamic(source, target, options, excluded, external)
    if options.mode == "static":
        return _static(source, target, options, excluded, calibration, external)
    model, details = _int4(onnx.load(str(source)), options, excluded, calibration)
    onnx.save(model, str(target), save_as_external_data=external)
    return details


def _excluded(candidates: list[str], options: QuantizeOptions, extra: tuple[str, ...]) -> dict:
    pattern = re.compile(options.exclude) if options.exclude else None
    excluded = {n: "matches --exclude" for n in candidates if pattern and pattern.search(n)}
    excluded.update({n: "kept float by accuracy control" for n in extra})
    return dict(sorted(excluded.items()))


def quantize_model_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: QuantizeOptions,
    calibration: Dataset | None = None,
    extra_exclude: tuple[str, ...] = (),
    protected: tuple[Path, ...] = (),
    stream: bool | None = None,
) -> dict:
    """Quantize the model at ``model`` into ``output``; return the quantization section.

    ``stream`` (default: when the model has external data) quantizes tensor by tensor in
    onnxruntime's format (``onnxprune.quant.large``) where ``streaming_refusal`` allows it.
    """
    options.validate()
    start = time.perf_counter()
    # int4 needs no inferred shapes (and writes none: onnxprune.quant.annotations)
    source = load_normalized(model, infer_shapes=options.mode != "int4")
    external = uses_external_data(source)
    candidates = quantizable_nodes(source, options.mode)
    excluded = _excluded(candidates, options, extra_exclude)
    protected = protected or (Path(model),)
    refusal = streaming_refusal(source, options, calibration)
    if (external if stream is None else stream) and refusal is None:
        details = quantize_streaming(source, options, excluded)
        save_model(source, output, protected=protected, external_data=external)
    elif options.mode == "int4" and not external:
        try:
            quantized, details = _int4_in_memory(source, options, excluded, calibration)
        except (ValueError, RuntimeError, AssertionError) as error:
            raise InputError(f"onnxruntime quantization failed: {error}") from error
        save_model(quantized, output, protected=protected)
    else:
        details = _through_files(source, output, options, excluded, calibration, protected)
        if external and refusal is not None:  # said, so a slow big-model run is explained
            logger.info("quantized through onnxruntime's whole-model path: %s", refusal)
            details["not_streamed"] = refusal
    return {
        **asdict(options),
        "quantizable_nodes": len(candidates),
        "excluded_nodes": sorted(excluded),
        "seconds": round(time.perf_counter() - start, 2),
        **details,
    }


def _through_files(source: ir.Model, output, options, excluded, calibration, protected) -> dict:
    external = uses_external_data(source)
    with tempfile.TemporaryDirectory(prefix="onnxprune-quantize-") as folder:
        # onnxruntime's quantizers see the normalised model (Constant and subgraph weights
        # lifted to initializers, every node named), as every other command does.
        normalized = Path(folder) / "normalized" / "model.onnx"
        normalized.parent.mkdir()
        if external:
            ir.save(source, normalized, external_data="model.onnx.data")
        else:
            ir.external_data.load_to_model(source)
            ir.save(source, normalized)
        target = Path(folder) / "quantized.onnx"
        try:
            details = _run_tool(normalized, target, options, excluded, calibration, external)
        except (ValueError, RuntimeError, AssertionError, onnx.checker.ValidationError) as error:
            raise InputError(f"onnxruntime quantization failed: {error}") from error
        save_model(load_model(target), output, protected=protected, external_data=external)
    return details
