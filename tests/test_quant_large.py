"""Tensor-at-a-time quantization writes exactly what onnxruntime's own quantizers write."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxprune.model_io import load_model
from onnxprune.quant.large import quantize_streaming, streaming_refusal
from onnxprune.quant.large_dynamic import int8_per_column
from onnxprune.quantize import QuantizeOptions, quantize_model_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import scale  # noqa: E402  (bench/scale.py builds the synthetic decoder stacks)

CASES = {
    "int4": QuantizeOptions(mode="int4"),
    "int4-symmetric-block16": QuantizeOptions(mode="int4", symmetric=True, block_size=16),
    "int4-excluded": QuantizeOptions(mode="int4", exclude=r"^l1\.MatMul"),
    "dynamic": QuantizeOptions(mode="dynamic"),
    "dynamic-excluded": QuantizeOptions(mode="dynamic", exclude=r"^l0\.MatMul4"),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block stack (d=48: int4 blocks of 32 need padding) with external data."""
    return scale.build(0.2, tmp_path_factory.mktemp("stack"), d=48, samples=4)


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _nodes(model: ir.Model) -> list[tuple]:
    return sorted(
        (n.op_type, n.name, tuple(v.name for v in n.inputs if v), tuple(v.name for v in n.outputs))
        for n in model.graph
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_streamed_model_is_onnxruntimes_model(stack: Path, tmp_path: Path, case: str) -> None:
    options = CASES[case]
    streamed = quantize_model_file(stack, tmp_path / "streamed.onnx", options)
    through_ort = quantize_model_file(stack, tmp_path / "ort.onnx", options, stream=False)
    assert streamed["streamed"] is True and "streamed" not in through_ort
    if options.mode == "int4":  # onnxruntime's dynamic path reports no per-layer plan
        assert streamed["layers"] == sorted(through_ort["layers"], key=lambda d: d["node"])
    ours, theirs = ir.load(tmp_path / "streamed.onnx"), ir.load(tmp_path / "ort.onnx")
    assert _nodes(ours) == _nodes(theirs)
    assert dict(ours.opset_imports) == dict(theirs.opset_imports)
    mine, reference = ours.graph.initializers, theirs.graph.initializers
    assert sorted(mine) == sorted(reference)
    for name, value in mine.items():
        assert value.const_value.dtype == reference[name].const_value.dtype, name
        assert value.const_value.tobytes() == reference[name].const_value.tobytes(), name
    x = np.load(stack.with_suffix(".npz"))["x"]
    expected = _outputs(tmp_path / "ort.onnx", x)
    assert _outputs(tmp_path / "streamed.onnx", x).tobytes() == expected.tobytes()


def test_int8_columns_match_onnxruntime_on_edge_values() -> None:
    from onnxruntime.quantization.quant_utils import onnx_proto, quantize_data

    weight = np.random.default_rng(3).standard_normal((40, 6), dtype=np.float32)
    weight[:, 1] = 0.0  # an all-zero column: scale 1
    weight[:, 2] = np.abs(weight[:, 2])  # only positive
    weight[::2, 3] = 2.5 * weight[0, 3]  # ties at .5 after scaling
    values, scales, zeros = int8_per_column(weight)
    for column in range(weight.shape[1]):
        zero, scale, data = quantize_data(
            weight[:, column], onnx_proto.TensorProto.INT8, True, reduce_range=False
        )
        assert scales[column].tobytes() == np.float32(scale).tobytes()
        assert zeros[column] == zero
        assert values[:, column].tobytes() == data.astype(np.int8).tobytes()


def _with_gather(path: Path) -> ir.Model:
    model = load_model(path)
    table = ir.Value(name="table", const_value=ir.tensor(np.ones((4, 48), np.float32)))
    model.graph.register_initializer(table)
    index = ir.Value(name="index", const_value=ir.tensor(np.array([1], np.int64)))
    model.graph.register_initializer(index)
    model.graph.append(ir.node("Gather", [table, index], name="embed"))
    return model


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (QuantizeOptions(mode="int4", algorithm="hqq"), "round-to-nearest"),
        (QuantizeOptions(mode="int4", int8_ratio=0.5), "8-bit layers"),
        (QuantizeOptions(mode="dynamic", per_channel=False), "per-channel"),
        (QuantizeOptions(mode="static", calibration="x.npz"), "calibrates"),
    ],
)
def test_options_that_do_not_stream_say_why(stack: Path, options, reason: str) -> None:
    refusal = streaming_refusal(load_model(stack), options, None)
    assert refusal is not None and reason in refusal
    if options.mode != "static":
        assert (
            streaming_refusal(load_model(stack), QuantizeOptions(mode=options.mode), None) is None
        )


def test_ops_onnxruntime_would_also_quantize_keep_its_path(stack: Path) -> None:
    model = _with_gather(stack)
    for mode in ("int4", "dynamic"):
        refusal = streaming_refusal(model, QuantizeOptions(mode=mode), None)
        assert refusal == "onnxruntime would also quantize Gather nodes"


def test_a_big_model_that_does_not_stream_says_why_in_the_report(
    stack: Path, tmp_path: Path
) -> None:
    options = QuantizeOptions(mode="dynamic", per_channel=False)
    section = quantize_model_file(stack, tmp_path / "out.onnx", options)
    assert section["not_streamed"] == "only per-channel dynamic int8 streams"
    assert "streamed" not in section


@pytest.mark.parametrize(
    ("mode", "suffixes"),
    [("int4", ("_Q4", "_scales", "_zero_points")), ("dynamic", ("_quantized", "_scale"))],
)
def test_quantized_tensors_are_written_out_as_produced(stack: Path, mode: str, suffixes) -> None:
    model = load_model(stack)
    quantize_streaming(model, QuantizeOptions(mode=mode), {})
    made = [v for name, v in model.graph.initializers.items() if name.endswith(suffixes)]
    assert len(made) == 6 * len(suffixes)  # 2 blocks of 3 MatMuls
    assert all(isinstance(value.const_value, ir.ExternalTensor) for value in made)


def _float16_model(folder: Path) -> Path:
    """y = MatMul(MatMul(x, W1), W2) in float16, weights in external data (K=40: padded)."""
    rng = np.random.default_rng(5)
    x = ir.Value(name="x", shape=ir.Shape(["n", 40]), type=ir.TensorType(ir.DataType.FLOAT16))
    graph = ir.Graph([x], [], nodes=[], name="half", opset_imports={"": 20})
    value = x
    for index, (k, n) in enumerate([(40, 24), (24, 8)]):
        array = (0.3 * rng.standard_normal((k, n))).astype(np.float16)
        weight = ir.Value(name=f"w{index}", const_value=ir.tensor(array, name=f"w{index}"))
        graph.register_initializer(weight)
        node = ir.node("MatMul", [value, weight], name=f"mm{index}")
        graph.append(node)
        value = node.outputs[0]
        value.name, value.type, value.shape = f"h{index}", x.type, ir.Shape(["n", n])
    graph.outputs.append(value)
    path = folder / "half.onnx"
    ir.save(ir.Model(graph, ir_version=10), path, external_data="half.onnx.data")
    return path


def test_float16_weights_stream_to_onnxruntimes_int4(tmp_path: Path) -> None:
    model = _float16_model(tmp_path)
    options = QuantizeOptions(mode="int4", block_size=16)
    assert quantize_model_file(model, tmp_path / "streamed.onnx", options)["streamed"] is True
    quantize_model_file(model, tmp_path / "ort.onnx", options, stream=False)
    ours, theirs = ir.load(tmp_path / "streamed.onnx"), ir.load(tmp_path / "ort.onnx")
    for name, value in theirs.graph.initializers.items():
        assert value.const_value.tobytes() == ours.graph.initializers[name].const_value.tobytes()
    x = np.random.default_rng(6).standard_normal((3, 40)).astype(np.float16)
    session = ort.InferenceSession(str(tmp_path / "streamed.onnx"))
    reference = ort.InferenceSession(str(tmp_path / "ort.onnx"))
    assert session.run(None, {"x": x})[0].tobytes() == reference.run(None, {"x": x})[0].tobytes()
    refusal = streaming_refusal(load_model(model), QuantizeOptions(mode="dynamic"), None)
    assert refusal == "MatMul mm0 has a weight that is not a 2-D float tensor this mode streams"
