"""Transformer-aware static int8: pre-process, smooth, calibrate, quantize, keep floats float.

1. onnxruntime's pre-processing (``quant_pre_process``). Its symbolic shape inference gives up
   on default-attention (SDPA) exports ("Incomplete symbolic shape inference"); the step is then
   run without it (constant folding and ONNX shape inference still run), and the report says so.
2. The rule table (``onnxprune.quant.rules``) decides which nodes get int8 inputs.
3. Optional SmoothQuant (``onnxprune.quant.smooth``) on the int8 ``MatMul``s; its activation
   scale goes into constants where that is exact (``onnxprune.quant.fold``), else a ``Mul``.
4. ``quantize_static`` in QDQ format: per-channel int8 weights, uint8 activations calibrated
   with MinMax, Entropy or Percentile; ``MatMul``/``Gemm`` outputs stay float.
5. ``KeepFloatConsumersPass``: consumers that the table keeps in float (residual ``Add``,
   ``LayerNormalization``, ``Shape``) read the float tensor, not its quantize-dequantize copy.
6. Bias correction (``onnxprune.quant.bias``) of the int8 ``MatMul``s; the measured
   per-layer output errors it computes go into the plan and rank layers for accuracy control.
7. ``FuseIntegerMatMulPass``: each int8 ``MatMul`` and its bias ``Add`` become one
   ``MatMulIntegerToFloat`` (onnxruntime's QDQ fusion leaves the bias ``Add`` separate).
8. Embedding tables to 8-bit ``GatherBlockQuantized`` (``onnxprune.quant.embeddings``).
9. Intermediate shape annotations dropped (``onnxprune.quant.annotations``: with them
   onnxruntime fuses ``SkipLayerNormalization``, which it runs slower).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from onnxprune.data import Dataset
from onnxprune.quant.annotations import drop_shape_annotations
from onnxprune.quant.bias import BiasCorrectionPass, fake_quant_layers
from onnxprune.quant.capture import capture_rows
from onnxprune.quant.embeddings import QuantizeEmbeddingsPass, block_for, embedding_gathers
from onnxprune.quant.fuse import FuseIntegerMatMulPass
from onnxprune.quant.mixed import MUL_BUDGET, mix_smoothing, smoothing_reasons
from onnxprune.quant.ranges import SetActivationRangesPass, activation_quantizers
from onnxprune.quant.reader import DatasetReader
from onnxprune.quant.rules import (
    INT8_CARRIER_OPS,
    INT8_OPS,
    OUTPUT_FLOAT_OPS,
    LayerDecision,
    static_plan,
)
from onnxprune.quant.selection import matmul_weights
from onnxprune.quant.smooth import SmoothQuantPass, smoothable_groups

__all__ = [
    "CALIBRATE_METHODS",
    "KeepFloatConsumersPass",
    "StaticSettings",
    "preprocess",
    "quantize_static_file",
]

logger = logging.getLogger(__name__)
CALIBRATE_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
EMBEDDING_BLOCK = 128
# samples on which a value-projection fold of SmoothQuant's scale is checked
FOLD_CHECK_SAMPLES = 4
# calibration rows (real tokens) kept per captured tensor for ranges and bias correction
ROWS = 8192
# Ops through which onnxruntime moves int8 tensors unchanged (QDQ propagation).
_INT8_MOVERS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")


@contextlib.contextmanager
def _in_folder(folder: Path) -> Iterator[None]:
    # onnxruntime's symbolic shape inference dumps its partial model into the working folder
    # when it gives up; keep that out of the user's folder.
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess(source: Path, target: Path, external: bool) -> str:
    """onnxruntime's pre-processing into ``target``; returns what was run."""
    source, target = source.resolve(), target.resolve()
    try:
        with _in_folder(target.parent):
            quant_pre_process(str(source), str(target), save_as_external_data=external)
        return "symbolic shape inference, optimisation, ONNX shape inference"
    except Exception as error:  # onnxruntime raises a bare Exception here
        logger.info("symbolic shape inference failed (%s): pre-processing without it", error)
    quant_pre_process(
        str(source), str(target), skip_symbolic_shape=True, save_as_external_data=external
    )
    return "optimisation, ONNX shape inference (symbolic shape inference incomplete: skipped)"


class KeepFloatConsumersPass:
    """Rewire non-int8 consumers of each float-made activation ``Q -> DQ`` pair to the float
    tensor.

    onnxruntime's QDQ quantizer puts one Q/DQ pair on a tensor and makes every consumer read the
    dequantized copy, so a residual ``Add`` or ``LayerNormalization`` beside an int8 ``MatMul``
    would see 8-bit values. Afterwards only int8 ops (and ops that move int8 tensors) read it.
    """

    def call(self, model: onnx.ModelProto) -> int:
        producers = {o: n for n in model.graph.node for o in n.output}
        constants = {t.name for t in model.graph.initializer}
        keep = {*INT8_OPS, *INT8_CARRIER_OPS, *_INT8_MOVERS, "QuantizeLinear"}
        floats = {}
        for node in model.graph.node:
            quantize = producers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                if node.input[0] not in constants and self._float_made(quantize, producers):
                    floats[node.output[0]] = quantize.input[0]
        rewired = 0
        for node in model.graph.node:
            if node.op_type in keep:
                continue
            for index, name in enumerate(node.input):
                if name in floats:
                    node.input[index] = floats[name]
                    rewired += 1
        logger.info("%d float consumers rewired to unquantized tensors", rewired)
        return rewired

    @staticmethod
    def _float_made(quantize: onnx.NodeProto, producers: dict) -> bool:
        # A tensor that an int8 op writes (a Conv fused into QLinearConv, a Relu or pool between
        # int8 convolutions) stays int8 for all its readers: rewiring one of them would break
        # onnxruntime's fusion and leave the Conv in float (a CNN's residual Add).
        producer = producers.get(quantize.input[0])
        if producer is None:
            return True
        int8_out = set(INT8_OPS) - set(OUTPUT_FLOAT_OPS)
        return producer.op_type not in int8_out and producer.op_type not in INT8_CARRIER_OPS


def _smooth(model, int8: set[str], data: Dataset, alphas, muls: bool) -> SmoothQuantPass:
    rows = capture_rows(model, list(smoothable_groups(model, int8)), data)
    probe = Dataset(data.slice(0, FOLD_CHECK_SAMPLES), sample_axes=dict(data.sample_axes))

    def capture(candidate: onnx.ModelProto, names: list[str]) -> dict:
        return capture_rows(candidate, names, probe, max_rows=1 << 30)

    smoother = SmoothQuantPass(rows, tuple(alphas), capture, muls=muls)
    smoother.call(model, int8)
    return smoother


@dataclass(frozen=True)
class StaticSettings:
    """How :func:`quantize_static_file` quantizes (see its arguments)."""

    per_channel: bool = True
    method: str = "minmax"
    smooth_alphas: tuple[float, ...] = ()
    bias_correction: bool = True
    external: bool = False


@dataclass
class _Variant:
    """One quantization of the pre-processed model: the smoothed float model, its quantized
    form (before embeddings and annotations) and what the passes did."""

    model: onnx.ModelProto
    quantized: onnx.ModelProto
    smoother: SmoothQuantPass | None
    corrector: BiasCorrectionPass
    summary: dict


def _quantize_variant(
    prepared: Path, target: Path, data: Dataset, int8: set[str], settings: StaticSettings, muls
) -> _Variant:
    model = onnx.load(str(prepared))
    alphas = settings.smooth_alphas
    smoother = _smooth(model, int8, data, alphas, muls) if alphas else None
    smoothed_path = target.with_name(target.stem + ".smoothed.onnx")
    onnx.save(model, str(smoothed_path), save_as_external_data=settings.external)
    quantize_static(
        smoothed_path,
        target,
        DatasetReader(data),
        quant_format=QuantFormat.QDQ,
        per_channel=settings.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=sorted(int8),
        op_types_to_quantize=sorted({*INT8_OPS, *INT8_CARRIER_OPS}),
        calibrate_method=CALIBRATE_METHODS[settings.method],
        use_external_data_format=settings.external,
        extra_options={"OpTypesToExcludeOutputQuantization": list(OUTPUT_FLOAT_OPS)},
    )
    quantized = onnx.load(str(target))
    rewired = KeepFloatConsumersPass().call(quantized)
    rows = capture_rows(model, _captured(model, quantized), data, max_rows=ROWS)
    ranged = SetActivationRangesPass(rows, settings.method).call(quantized)
    corrector = _bias_corrector(model, quantized, rows, settings.bias_correction)
    corrected = corrector.call(quantized)
    fused = FuseIntegerMatMulPass().call(quantized)
    summary = {"float_consumers_rewired": rewired, "ranges_from_real_tokens": ranged}
    summary |= {"bias_corrected_layers": corrected, "fused_matmuls": fused}
    return _Variant(model, quantized, smoother, corrector, summary)


def quantize_static_file(
    prepared: Path,
    target: Path,
    data: Dataset,
    excluded: Mapping[str, str],
    per_channel: bool = True,
    method: str = "minmax",
    smooth_alphas: tuple[float, ...] = (),
    bias_correction: bool = True,
    embeddings: bool = True,
    external: bool = False,
    mul_budget: float | None = MUL_BUDGET,
) -> tuple[list[LayerDecision], dict]:
    """Quantize the pre-processed model at ``prepared`` into ``target``.

    ``mul_budget``: SmoothQuant ``Mul``s (scales that cannot be folded) are kept only where
    dropping them costs more output cosine on the calibration data than this
    (``onnxprune.quant.mixed``); None keeps every ``Mul``.

    Returns:
        The per-node plan and a summary (smoothed tensors, rewired consumers).
    """
    settings = StaticSettings(per_channel, method, tuple(smooth_alphas), bias_correction, external)
    plan = static_plan(onnx.load(str(prepared), load_external_data=False), excluded)
    int8 = {d.node for d in plan if d.precision == "int8"}
    chosen = _quantize_variant(prepared, target, data, int8, settings, muls=True)
    quantized, errors = chosen.quantized, dict(chosen.corrector.errors)
    smoothed = dict(chosen.smoother.placed) if chosen.smoother else {}
    mixing = None
    if mul_budget is not None and chosen.smoother is not None and not external:
        plain_target = target.with_name(target.stem + ".plain.onnx")
        plain = partial(_quantize_variant, prepared, plain_target, data, int8, settings, False)
        mixing = mix_smoothing(chosen, plain, data, mul_budget)
    if mixing is not None:
        for tensor in mixing.dropped:
            smoothed.pop(tensor)
        errors |= mixing.errors
    plan += _quantize_embeddings(quantized, excluded) if embeddings else []
    drop_shape_annotations(quantized)
    onnx.save(quantized, str(target), save_as_external_data=external)
    summary = {"smoothed_tensors": len(smoothed), **chosen.summary}
    summary["smoothing_scale_in"] = dict(Counter(smoothed.values()))
    if mixing is not None:
        summary["smoothing_muls"] = mixing.report
    errors = dict(sorted(errors.items(), key=lambda item: (-item[1], item[0])))
    reasons = smoothing_reasons(chosen.smoother, mixing)
    plan = [_with_error(d, errors, reasons) for d in plan]
    return plan, {**summary, "layer_errors": errors}


def _quantize_embeddings(model: onnx.ModelProto, excluded: Mapping[str, str]) -> list:
    tables = embedding_gathers(model, 16)
    chosen = {n for n, reason in tables.items() if reason is None and n not in excluded}
    QuantizeEmbeddingsPass({n: block_for(model, n, EMBEDDING_BLOCK) for n in chosen}).call(model)
    plan = []
    for name, reason in sorted(tables.items()):
        if name in chosen:
            plan.append(LayerDecision(name, "Gather", "int8", "embedding table (8-bit blocks)"))
        else:
            plan.append(LayerDecision(name, "Gather", "float", excluded.get(name, reason or "")))
    return plan


def _with_error(decision: LayerDecision, errors: dict[str, float], reasons: dict) -> LayerDecision:
    reason = decision.reason
    if decision.node in reasons:
        reason = f"{reason}; {reasons[decision.node]}"
    if decision.node in errors:
        reason = f"{reason}; measured output error {errors[decision.node]:.4f}"
    return LayerDecision(decision.node, decision.op_type, decision.precision, reason)


def _captured(model: onnx.ModelProto, quantized: onnx.ModelProto) -> set[str]:
    # the float inputs of the int8 MatMuls (bias correction) and of the activation quantizers
    # (ranges), as the float model computes them
    weights = matmul_weights(model, set(fake_quant_layers(quantized)))
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    wanted = {a for a, _ in weights.values()} | set(activation_quantizers(quantized))
    return wanted & produced


def _bias_corrector(
    model: onnx.ModelProto, quantized: onnx.ModelProto, rows: dict, apply: bool
) -> BiasCorrectionPass:
    weights = matmul_weights(model, set(fake_quant_layers(quantized)))
    return BiasCorrectionPass(rows, {n: w for n, (_, w) in weights.items()}, apply)
