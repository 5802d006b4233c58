"""SmoothQuant's activation scale folded into constants: exact where it is folded, a Mul where
a fold would move channels; shape annotations that make onnxruntime fuse a slower op dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from quant_models import tiny_transformer, token_data

from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.model_io import load_model
from onnxprune.quant.annotations import drop_shape_annotations
from onnxprune.quant.capture import capture_rows
from onnxprune.quant.fold import LAYERNORM, VALUE, plan_fold
from onnxprune.quant.smooth import SmoothQuantPass, smoothable_groups
from onnxprune.quantize import QuantizeOptions, quantize_model_file

D = 8


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _smooth(model: onnx.ModelProto, data: Dataset, fold: bool) -> SmoothQuantPass:
    nodes = {n.name for n in model.graph.node if n.op_type == "MatMul"}
    rows = capture_rows(model, list(smoothable_groups(model, nodes)), data)

    def capture(candidate, names):
        return capture_rows(candidate, names, data, max_rows=1 << 30)

    smoother = SmoothQuantPass(rows, (0.9,), capture if fold else None)
    smoother.call(model, nodes)
    return smoother


def _compare(model: onnx.ModelProto, data: Dataset, feed: dict) -> tuple[SmoothQuantPass, float]:
    reference = _run(model, feed)
    folded, with_mul = onnx.ModelProto(), onnx.ModelProto()
    folded.CopyFrom(model)
    with_mul.CopyFrom(model)
    smoother = _smooth(folded, data, fold=True)
    assert set(_smooth(with_mul, data, fold=False).placed.values()) == {"Mul"}
    size = np.abs(reference).max()
    assert np.abs(_run(with_mul, feed) - reference).max() / size < 1e-5
    return smoother, float(np.abs(_run(folded, feed) - _run(with_mul, feed)).max() / size)


def test_context_scale_folds_into_the_value_projection_exactly(tmp_path: Path) -> None:
    model_path, tokens = tiny_transformer(tmp_path / "t.onnx"), token_data(tmp_path / "d.npz")
    data = load_dataset(tokens, input_specs(load_model(model_path)))
    model = onnx.load(str(model_path))
    smoother, difference = _compare(model, data, dict(np.load(tokens)))
    assert smoother.placed["context"] == VALUE
    # h0 and h1 are also read by the residual Adds (post-LN), gelu by nothing foldable
    assert {smoother.placed[t] for t in ("h0", "h1", "gelu") if t in smoother.placed} <= {"Mul"}
    assert difference < 1e-5


def _block(p: str, source: str, out: str, permute: bool, rng) -> tuple[list, list]:
    """source -> LN -> (q, v projections) -> softmax(q q^T) @ v' -> o projection -> out; v' is v,
    or v with its channels interleaved by Reshape/Transpose/Reshape when ``permute``."""
    make = helper.make_node
    nodes = [
        make("LayerNormalization", [source, p + "g", p + "b"], [p + "h"], name=p + "ln", axis=-1),
        make("MatMul", [p + "h", p + "wq"], [p + "q"], name=p + "q/MatMul"),
        make("MatMul", [p + "h", p + "wv"], [p + "vm"], name=p + "v/MatMul"),
        make("Add", [p + "vm", p + "bv"], [p + "v"], name=p + "v/Add"),
        make("Transpose", [p + "q"], [p + "qt"], name=p + "qt", perm=[0, 2, 1]),
        make("MatMul", [p + "q", p + "qt"], [p + "scores"], name=p + "scores"),
        make("Softmax", [p + "scores"], [p + "p"], name=p + "softmax", axis=-1),
    ]
    if permute:
        nodes += [
            make("Reshape", [p + "v", "split"], [p + "v4"], name=p + "split"),
            make("Transpose", [p + "v4"], [p + "v4t"], name=p + "swap", perm=[0, 1, 3, 2]),
            make("Reshape", [p + "v4t", "merge"], [p + "vp"], name=p + "merge"),
        ]
    nodes += [
        make("MatMul", [p + "p", p + ("vp" if permute else "v")], [p + "context"], name=p + "c"),
        make("MatMul", [p + "context", p + "wo"], [out], name=p + "o/MatMul"),
    ]
    weights = {n: rng.standard_normal((D, D)) for n in ("wq", "wv", "wo")}
    weights |= {"g": rng.uniform(0.5, 2, D), "b": rng.standard_normal(D), "bv": rng.random(D)}
    weights["g"][1] *= 30  # outlier channels in h and in v (so in the context): both smooth
    weights["wv"][:, 1] *= 30
    inits = [numpy_helper.from_array(v.astype(np.float32), p + k) for k, v in weights.items()]
    return nodes, inits


def _pre_ln(permute: bool, blocks: int = 1) -> onnx.ModelProto:
    rng, nodes = np.random.default_rng(0), []
    inits = [
        numpy_helper.from_array(np.array([0, 0, 2, D // 2], np.int64), "split"),
        numpy_helper.from_array(np.array([0, 0, D], np.int64), "merge"),
    ]
    for index in range(blocks):
        prefix = "" if index == 0 else f"b{index}/"
        source, out = ("x" if index == 0 else f"y{index - 1}"), f"y{index}"
        block_nodes, block_inits = _block(prefix, source, out, permute, rng)
        nodes, inits = nodes + block_nodes, inits + block_inits
    nodes.append(helper.make_node("Identity", [f"y{blocks - 1}"], ["y"], name="out"))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, D])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, D])
    graph = helper.make_graph(nodes, "pre_ln", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("permute", [False, True])
def test_layernorm_fold_and_channel_moving_path(permute: bool) -> None:
    model = _pre_ln(permute)
    x = np.random.default_rng(1).standard_normal((6, 4, D)).astype(np.float32)
    data = Dataset({"x": x})
    smoother, difference = _compare(model, data, {"x": x})
    assert smoother.placed["h"] == LAYERNORM
    # interleaved channels: the planned fold fails its check on the samples and a Mul stays
    assert smoother.placed["context"] == ("Mul" if permute else VALUE)
    assert difference < 1e-5


def test_stacked_blocks_all_fold() -> None:
    # each fold is checked with the later layers seeing their usual inputs
    model = _pre_ln(False, blocks=3)
    x = np.random.default_rng(1).standard_normal((6, 4, D)).astype(np.float32)
    smoother, difference = _compare(model, Dataset({"x": x}), {"x": x})
    assert [smoother.placed[f"{p}context"] for p in ("", "b1/", "b2/")] == [VALUE] * 3
    assert difference < 1e-5


def test_no_fold_when_another_node_reads_the_tensor() -> None:
    model = _pre_ln(False)
    group = [n for n in model.graph.node if n.input[0] == "h" and n.op_type == "MatMul"]
    assert plan_fold(model, "h", group).kind == LAYERNORM
    model.graph.node.append(helper.make_node("Add", ["h", "y"], ["z"], name="residual"))
    assert plan_fold(model, "h", group) is None


def _add_layernorm(annotated: bool) -> onnx.ModelProto:
    # the Add's first input has a run-time shape that only an annotation gives (as a Reshape
    # to a computed shape does in an exported transformer)
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["a"], name="reshape"),
        helper.make_node("Add", ["a", "r"], ["s"], name="residual"),
        helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], name="ln", axis=-1),
    ]
    shape = ["N", 4, D]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "r")]
    inputs.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [3]))
    inits = [numpy_helper.from_array(np.ones(D, np.float32), n) for n in ("g", "b")]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "add_ln", inputs, [output], inits)
    if annotated:
        graph.value_info.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, shape))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fused_ops(model: onnx.ModelProto, tmp_path: Path) -> list[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_dropped_annotations_keep_add_and_layernorm_unfused(tmp_path: Path) -> None:
    annotated = _add_layernorm(True)
    assert "SkipLayerNormalization" in _fused_ops(annotated, tmp_path)
    assert drop_shape_annotations(annotated) == 1
    assert _fused_ops(annotated, tmp_path) == ["Reshape", "Add", "LayerNormalization"]


@pytest.mark.parametrize("mode", ["dynamic", "static", "int4"])
def test_quantized_models_carry_no_shape_annotations(tmp_path: Path, mode: str) -> None:
    model, tokens = tiny_transformer(tmp_path / "t.onnx"), token_data(tmp_path / "d.npz")
    data = load_dataset(tokens, input_specs(load_model(model)))
    options = QuantizeOptions(mode=mode, calibration=str(tokens), block_size=16)
    section = quantize_model_file(model, tmp_path / "q.onnx", options, data)
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    assert {v.name for v in graph.value_info} <= {t.name for t in graph.initializer}
    if mode == "dynamic":  # onnxruntime's quantizer wrote some
        assert section["shape_annotations_dropped"] > 0
