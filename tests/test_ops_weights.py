"""The op table and weight discovery on small hand-built graphs, one case per layout rule."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from conftest import parse_model

from onnxprune.ops import WeightLayout
from onnxprune.weights import find_weights


def _ones(count: int) -> str:
    return ",".join(["1.0"] * count)


HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'

CASES = [
    (
        "gemm_transB1",
        "agraph (float[N, 4] x) => (float[N, 3] y) <float[3, 4] w = {%s}> "
        "{ y = Gemm <transB: int = 1> (x, w) }".replace("%s", _ones(12)),
        WeightLayout(out_axis=0, in_axis=1),
    ),
    (
        "gemm_transB0",
        "agraph (float[N, 4] x) => (float[N, 3] y) <float[4, 3] w = {%s}> "
        "{ y = Gemm (x, w) }".replace("%s", _ones(12)),
        WeightLayout(out_axis=1, in_axis=0),
    ),
    (
        "matmul",
        "agraph (float[N, 4] x) => (float[N, 3] y) <float[4, 3] w = {%s}> "
        "{ y = MatMul (x, w) }".replace("%s", _ones(12)),
        WeightLayout(out_axis=1, in_axis=0),
    ),
    (
        "conv_group2",
        "agraph (float[1, 4, 5, 5] x) => (float[1, 6, 3, 3] y) <float[6, 2, 3, 3] w = {%s}> "
        "{ y = Conv <group: int = 2> (x, w) }".replace("%s", _ones(108)),
        WeightLayout(out_axis=0, in_axis=1),
    ),
    (
        "conv_transpose",
        "agraph (float[1, 4, 3, 3] x) => (float[1, 6, 5, 5] y) <float[4, 6, 3, 3] w = {%s}> "
        "{ y = ConvTranspose (x, w) }".replace("%s", _ones(216)),
        WeightLayout(out_axis=1, in_axis=0),
    ),
]


def _model(graph: str) -> ir.Model:
    return ir.serde.deserialize_model(parse_model(HEADER + graph))


@pytest.mark.parametrize(("graph", "layout"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_weight_layouts(graph: str, layout: WeightLayout) -> None:
    prunable, skipped = find_weights(_model(graph))
    assert [(w.name, w.layout) for w in prunable] == [("w", layout)]
    assert skipped == []


REFUSALS = [
    (
        "embedding",
        "agraph (int64[N] i) => (float[N, 2] y) <float[5, 2] table = {%s}> "
        "{ y = Gather (table, i) }".replace("%s", _ones(10)),
        "embedding table (Gather data)",
    ),
    (
        "bias_add",
        "agraph (float[N, 2] x) => (float[N, 2] y) <float[2] b = {1.0, 2.0}> { y = Add (x, b) }",
        "elementwise operand",
    ),
    (
        "unknown_op",
        "agraph (float[N, 2] x) => (float[N, 2] y) <float[2, 2] w = {1.0, 2.0, 3.0, 4.0}> "
        "{ t = Transpose (w) \n y = MatMul (x, t) }",
        "consumed by Transpose, which is not in the op table",
    ),
    (
        "matmul_3d",
        "agraph (float[2, N, 2] x) => (float[2, N, 2] y) <float[2, 2, 2] w = {%s}> "
        "{ y = MatMul (x, w) }".replace("%s", _ones(8)),
        "MatMul constant B of rank 3 (only 2-D weights are pruned)",
    ),
    (
        "integer",
        "agraph (float[N, 4] x) => (float[N, 2, 2] y) <int64[3] shape = {-1, 2, 2}> "
        "{ y = Reshape (x, shape) }",
        "INT64 tensor, not floating point",
    ),
    (
        "shared_weight_and_bias",
        "agraph (float[N, 2] x) => (float[N, 2] y) <float[2, 2] w = {1.0, 2.0, 3.0, 4.0}> "
        "{ t = MatMul (x, w) \n y = Add (t, w) }",
        "elementwise operand",
    ),
]


@pytest.mark.parametrize(
    ("graph", "reason"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
def test_refusals_carry_a_reason(graph: str, reason: str) -> None:
    prunable, skipped = find_weights(_model(graph))
    assert prunable == []
    assert [s.reason for s in skipped] == [reason]


def test_weight_shared_by_agreeing_layers_is_prunable() -> None:
    graph = (
        "agraph (float[N, 2] x) => (float[N, 2] y) <float[2, 2] w = {1.0, 2.0, 3.0, 4.0}> "
        "{ t = MatMul (x, w) \n y = MatMul (t, w) }"
    )
    prunable, _ = find_weights(_model(graph))
    assert [w.name for w in prunable] == ["w"]
    assert prunable[0].size == 4
    assert np.prod(prunable[0].shape) == 4
