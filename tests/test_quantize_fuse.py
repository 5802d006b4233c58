"""FuseIntegerMatMulPass: a static int8 MatMul and its bias Add become one MatMulIntegerToFloat
that computes what the QDQ graph computes; cases it must leave alone stay as they were."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxprune.quant.fuse import FuseIntegerMatMulPass

_GRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
qdq (float[N, 8] x) => (float[N, 4] y, float[N, 4] extra) {{
  xq = QuantizeLinear(x, xs, xz)
  xd = DequantizeLinear(xq, xs, xz)
  wd = DequantizeLinear <axis = {axis}> (wq, ws, wz)
  mm = MatMul(xd, wd)
  y = Add({bias}, mm)
  extra = Identity({extra})
}}
"""


def _model(bias: str = "b", extra: str = "y", per_column: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    model = onnx.parser.parse_model(_GRAPH.format(axis=1, bias=bias, extra=extra))
    scale = rng.uniform(0.01, 0.03, 4 if per_column else ()).astype(np.float32)
    constants = {
        "xs": np.float32(0.05),
        "xz": np.uint8(120),
        "wq": rng.integers(-127, 128, (8, 4)).astype(np.int8),
        "ws": scale,
        "wz": np.zeros(scale.shape, np.int8),
        "b": rng.standard_normal(4).astype(np.float32),
    }
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("per_column", [True, False], ids=["per_column", "per_tensor"])
def test_fused_matmul_computes_what_qdq_computes(per_column: bool) -> None:
    model = _model(per_column=per_column)
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    reference = _run(model, x)
    assert FuseIntegerMatMulPass().call(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "MatMulIntegerToFloat", "Identity"]
    assert len(model.graph.node[1].input) == 7  # bias fused
    np.testing.assert_allclose(_run(model, x)[0], reference[0], rtol=1e-5, atol=1e-5)
    assert {t.name for t in model.graph.initializer} == {"xs", "xz", "wq", "ws", "wz", "b"}


def test_product_read_twice_keeps_its_add() -> None:
    model = _model(extra="mm")
    x = np.random.default_rng(2).standard_normal((3, 8)).astype(np.float32)
    reference = _run(model, x)
    assert FuseIntegerMatMulPass().call(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["QuantizeLinear", "MatMulIntegerToFloat", "Add", "Identity"]
    assert len(model.graph.node[1].input) == 6  # no bias
    for got, want in zip(_run(model, x), reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_activation_added_after_matmul_is_not_a_bias() -> None:
    model = _model(bias="x_sum")
    model.graph.node.insert(0, onnx.helper.make_node("ReduceSum", ["x"], ["x_sum"], keepdims=1))
    assert FuseIntegerMatMulPass().call(model) == 1
    assert "Add" in [n.op_type for n in model.graph.node]


def test_float_matmul_is_left_alone() -> None:
    model = onnx.parser.parse_model(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        plain (float[N, 8] x, float[8, 4] w) => (float[N, 4] y) { y = MatMul(x, w) }
        """
    )
    assert FuseIntegerMatMulPass().call(model) == 0
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
