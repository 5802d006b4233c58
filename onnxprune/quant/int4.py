"""int4 weight-only quantization that covers the model: MatMul weights and embedding tables.

* ``MatMul`` weights -> ``MatMulNBits`` (onnxruntime's ``MatMulNBitsQuantizer``), blocks of
  ``block_size`` along the input axis, asymmetric by default (it measures better than symmetric
  on MiniLM). Algorithms: ``rtn`` (round to nearest), ``hqq`` (half-quadratic, data-free),
  ``gptq`` (data-aware: needs calibration data).
* Embedding tables (``Gather`` on a float 2-D initializer) -> ``GatherBlockQuantized`` (int4,
  blocks along the hidden axis), still run by onnxruntime's CPU provider; asymmetric tables
  vectorised (``onnxprune.quant.tables4``), symmetric ones
  through its numpy path.
* No intermediate shape annotations in the result (``onnxprune.quant.annotations``: with them
  onnxruntime fuses ``SkipLayerNormalization``, which it runs slower).
* Mixed precision: the ``int8_ratio`` most sensitive ``MatMul``s (by their output error under
  int4 on calibration data, ``onnxprune.quant.selection``) get 8-bit ``MatMulNBits`` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial

import onnx
from onnxruntime.quantization import QuantFormat
from onnxruntime.quantization.matmul_nbits_quantizer import (
    DefaultWeightOnlyQuantConfig,
    GPTQWeightOnlyQuantConfig,
    HQQWeightOnlyQuantConfig,
    MatMulNBitsQuantizer,
)

from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.quant.annotations import drop_shape_annotations
from onnxprune.quant.embeddings import embedding_gathers
from onnxprune.quant.reader import DatasetReader
from onnxprune.quant.rules import LayerDecision
from onnxprune.quant.selection import block_quantize, layer_errors, matmul_weights, most_sensitive
from onnxprune.quant.tables4 import QuantizeTables4Pass

__all__ = ["ALGORITHMS", "quantize_int4_model"]

logger = logging.getLogger(__name__)
ALGORITHMS = ("rtn", "hqq", "gptq")


def _config(algorithm: str, bits: int, block: int, symmetric: bool, data: Dataset | None, ops):
    if algorithm == "gptq" and bits == 4:
        return GPTQWeightOnlyQuantConfig(
            DatasetReader(data), block_size=block, op_types_to_quantize=ops
        )
    if algorithm == "hqq" and bits == 4:
        return HQQWeightOnlyQuantConfig(block_size=block, bits=4, op_types_to_quantize=ops)
    return DefaultWeightOnlyQuantConfig(
        block_size=block,
        is_symmetric=symmetric,
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=ops,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
        bits=bits,
    )


def _run(model: onnx.ModelProto, config, exclude: set[str]) -> onnx.ModelProto:
    quantizer = MatMulNBitsQuantizer(model, nodes_to_exclude=sorted(exclude), algo_config=config)
    quantizer.process()
    return quantizer.model.model


def _packed_tables(model: onnx.ModelProto, gathers: set[str], block: int) -> set[str]:
    # asymmetric tables whose blocks pair up into bytes: onnxprune.quant.tables4
    tables4 = QuantizeTables4Pass(block)
    constants = {t.name: t for t in model.graph.initializer}
    return {
        n.name
        for n in model.graph.node
        if n.name in gathers and tables4.supports(constants[n.input[0]])
    }


def _matmul_plan(names, errors, excluded, int8) -> list[LayerDecision]:
    plan = []
    for name in sorted(names):
        why = f"int4 output error {errors[name]:.4f}" if name in errors else "constant weight"
        if name in excluded:
            plan.append(LayerDecision(name, "MatMul", "float", excluded[name]))
        elif name in int8:
            plan.append(LayerDecision(name, "MatMul", "int8", f"among the most sensitive: {why}"))
        else:
            plan.append(LayerDecision(name, "MatMul", "int4", why))
    return plan


def _gather_plan(tables, gathers, excluded) -> list[LayerDecision]:
    plan = []
    for name, reason in sorted(tables.items()):
        reason = excluded.get(name, reason)
        precision = "int4" if name in gathers else "float"
        plan.append(LayerDecision(name, "Gather", precision, reason or "embedding table"))
    return plan


def quantize_int4_model(
    model: onnx.ModelProto,
    excluded: Mapping[str, str],
    block_size: int = 128,
    symmetric: bool = False,
    algorithm: str = "rtn",
    embeddings: bool = True,
    int8_ratio: float = 0.0,
    data: Dataset | None = None,
) -> tuple[onnx.ModelProto, list[LayerDecision], dict[str, float]]:
    """Quantize ``model``'s weights; returns the model, the plan and the per-layer int4 errors
    (measured only with calibration data or ``int8_ratio``; empty otherwise)."""
    if algorithm == "gptq" and (data is None or excluded):
        raise InputError(
            "algorithm gptq needs calibration data and quantizes every MatMul (no exclusions)"
        )
    names = set(matmul_weights(model, load=False))
    quantizer = partial(block_quantize, bits=4, block=block_size, symmetric=symmetric)
    errors = layer_errors(model, quantizer, data, None) if data or int8_ratio else {}
    int8 = set(most_sensitive({n: e for n, e in errors.items() if n not in excluded}, int8_ratio))
    tables = embedding_gathers(model, block_size) if embeddings else {}
    if int8:
        config = _config("rtn", 8, block_size, symmetric, data, ("MatMul",))
        model = _run(model, config, names - int8)
    gathers = {n for n, reason in tables.items() if reason is None and n not in excluded}
    fast = set() if symmetric else _packed_tables(model, gathers, block_size)
    slow = gathers - fast
    ops = ("MatMul", "Gather") if slow and algorithm == "rtn" else ("MatMul",)
    skip = set(excluded) | {n for n in tables if n not in slow}
    model = _run(model, _config(algorithm, 4, block_size, symmetric, data, ops), skip)
    if slow and algorithm != "rtn":
        model = _run(model, _config("rtn", 4, block_size, symmetric, data, ("Gather",)), skip)
    QuantizeTables4Pass(block_size).call(model, fast)
    drop_shape_annotations(model)
    plan = _matmul_plan(names, errors, excluded, int8) + _gather_plan(tables, gathers, excluded)
    return model, plan, errors
