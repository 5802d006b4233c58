"""Weight quantization through onnxruntime's own tools.

* ``dynamic``: int8 weights, activations quantized at run time (``quantize_dynamic``).
* ``static``: int8 QDQ with activation ranges calibrated on a ``.npz`` dataset, after
  onnxruntime's pre-processing (``quant_pre_process`` then ``quantize_static``; uint8
  activations, int8 weights, per-channel by default).
* ``int4``: 4-bit weight-only MatMul (``MatMulNBitsQuantizer``), symmetric, blocks of
  ``block_size`` along the input axis.

``quantize_model_file`` writes the result through ``model_io.save_model`` (atomic, checked by
the ONNX checker and onnxruntime). Nodes matching ``exclude`` stay in float.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.model_io import load_model, save_model, uses_external_data
from onnxprune.normalize import load_normalized

__all__ = ["MODES", "QuantizeOptions", "quantizable_nodes", "quantize_model_file"]

logger = logging.getLogger(__name__)
MODES = ("dynamic", "static", "int4")
_QUANTIZABLE = {
    "dynamic": ("MatMul", "Gemm", "Conv"),
    "static": ("MatMul", "Gemm", "Conv"),
    "int4": ("MatMul",),
}


@dataclass(frozen=True)
class QuantizeOptions:
    """Mode, granularity, exclusions and int4 block size."""

    mode: str = "dynamic"
    per_channel: bool = True
    exclude: str | None = None
    block_size: int = 128
    calibration: str | None = None

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown quantization mode '{self.mode}' ({', '.join(MODES)})")
        if self.mode == "static" and self.calibration is None:
            raise InputError("--mode static needs --calibration DATA.npz")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise InputError(f"--block-size must be a power of two >= 16, got {self.block_size}")
        if self.exclude is not None:
            try:
                re.compile(self.exclude)
            except re.error as error:
                raise InputError(f"--exclude '{self.exclude}' is not a valid regex") from error


class NpzReader(CalibrationDataReader):
    """Feeds a ``Dataset`` to onnxruntime's calibrator in batches."""

    def __init__(self, dataset: Dataset, batch_size: int = 16) -> None:
        self.batches = [
            dataset.slice(s, s + batch_size) for s in range(0, dataset.samples, batch_size)
        ]
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def quantizable_nodes(model: ir.Model, mode: str) -> list[str]:
    """Names of main-graph nodes the mode would quantize (ops with an initializer weight)."""
    constants = model.graph.initializers
    return [
        n.name or ""
        for n in model.graph
        if n.op_type in _QUANTIZABLE[mode]
        and len(n.inputs) > 1
        and n.inputs[1] is not None
        and n.inputs[1].name in constants
    ]


def _run_tool(
    source: Path,
    target: Path,
    options: QuantizeOptions,
    excluded: list[str],
    calibration: Dataset | None,
    external: bool,
) -> None:
    if options.mode == "dynamic":
        quantize_dynamic(
            source,
            target,
            per_channel=options.per_channel,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            use_external_data_format=external,
        )
    elif options.mode == "static":
        prepared = target.with_name("prepared.onnx")
        quant_pre_process(str(source), str(prepared), save_as_external_data=external)
        quantize_static(
            prepared,
            target,
            NpzReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=options.per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            use_external_data_format=external,
        )
    else:
        proto = onnx.load(str(source))
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=4,
            block_size=options.block_size,
            is_symmetric=True,
            nodes_to_exclude=excluded,
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=external)


def quantize_model_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: QuantizeOptions,
    calibration: Dataset | None = None,
    extra_exclude: tuple[str, ...] = (),
    protected: tuple[Path, ...] = (),
) -> dict:
    """Quantize the model at ``model`` into ``output``; return the quantization section."""
    options.validate()
    source = load_normalized(model)
    external = uses_external_data(source)
    candidates = quantizable_nodes(source, options.mode)
    pattern = re.compile(options.exclude) if options.exclude else None
    excluded = sorted({n for n in candidates if pattern and pattern.search(n)} | set(extra_exclude))
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
            _run_tool(normalized, target, options, excluded, calibration, external)
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as error:
            raise InputError(f"onnxruntime quantization failed: {error}") from error
        save_model(
            load_model(target),
            output,
            protected=protected or (Path(model),),
            external_data=external,
        )
    return {**asdict(options), "quantizable_nodes": len(candidates), "excluded_nodes": excluded}
