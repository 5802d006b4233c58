"""Structured pruning: every channel rule on a small graph, checked numerically in onnxruntime.

Removing units must compute exactly what the original model computes when the consumers ignore
those units (their input slices zeroed): that is checked with tight tolerances after pruning a
known unit set through a replayed decision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.model_io import save_model
from onnxprune.structured.pipeline import StructuredOptions, prune_structured

RNG = np.random.default_rng(0)


def _init(name: str, *shape: int, positive: bool = False) -> TensorProto:
    values = RNG.random(shape) + 0.5 if positive else RNG.standard_normal(shape)
    return numpy_helper.from_array(values.astype(np.float32), name)


def _const(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _model(nodes, x_shape, y_shape, initializers, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv(x, w, y, b=None, **attrs):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], pads=[1, 1, 1, 1], **attrs)


N = helper.make_node
CASES = {
    "matmul_bias_gelu_matmul": (
        _model(
            [
                N("MatMul", ["x", "w1"], ["h"]),
                N("Add", ["h", "b1"], ["a"]),
                N("Gelu", ["a"], ["g"]),
                N("MatMul", ["g", "w2"], ["y"]),
            ],
            [2, 3, 4],
            [2, 3, 5],
            [_init("w1", 4, 6), _init("b1", 6), _init("w2", 6, 5)],
            opset=20,
        ),
        "w1",
        [0, 2, 5],
        {"w2": 0},
    ),
    "gemm_transB": (
        _model(
            [
                N("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
                N("Relu", ["h"], ["r"]),
                N("Gemm", ["r", "w2"], ["y"], transB=1),
            ],
            [3, 4],
            [3, 2],
            [_init("w1", 6, 4), _init("b1", 6), _init("w2", 2, 6)],
        ),
        "w1",
        [1, 3, 4],
        {"w2": 1},
    ),
    "conv_bn_relu_conv": (
        _model(
            [
                _conv("x", "w1", "c", "b1"),
                N("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"]),
                N("Relu", ["n"], ["r"]),
                _conv("r", "w2", "y"),
            ],
            [1, 3, 5, 5],
            [1, 2, 5, 5],
            [
                _init("w1", 4, 3, 3, 3),
                _init("b1", 4),
                _init("s", 4),
                _init("t", 4),
                _init("m", 4),
                _init("v", 4, positive=True),
                _init("w2", 2, 4, 3, 3),
            ],
        ),
        "w1",
        [0, 3],
        {"w2": 1},
    ),
    "residual_add": (
        _model(
            [
                _conv("x", "w1", "a"),
                N("Relu", ["a"], ["r"]),
                _conv("r", "w2", "b"),
                N("Add", ["b", "r"], ["s"]),
                _conv("s", "w3", "y"),
            ],
            [1, 2, 4, 4],
            [1, 3, 4, 4],
            [_init("w1", 4, 2, 3, 3), _init("w2", 4, 4, 3, 3), _init("w3", 3, 4, 3, 3)],
        ),
        "w1",
        [1, 2],
        {"w3": 1, "w2": 1},
    ),
    "depthwise": (
        _model(
            [
                _conv("x", "w1", "a"),
                _conv("a", "dw", "d", "db", group=4),
                N("Sigmoid", ["d"], ["s"]),
                _conv("s", "w2", "y"),
            ],
            [1, 2, 4, 4],
            [1, 3, 4, 4],
            [
                _init("w1", 4, 2, 3, 3),
                _init("dw", 4, 1, 3, 3),
                _init("db", 4),
                _init("w2", 3, 4, 3, 3),
            ],
        ),
        "w1",
        [0, 1, 3],
        {"w2": 1},
    ),
    "pool_flatten_gemm": (
        _model(
            [
                _conv("x", "w1", "a"),
                N("GlobalAveragePool", ["a"], ["p"]),
                N("Flatten", ["p"], ["f"]),
                N("Gemm", ["f", "w2"], ["y"], transB=1),
            ],
            [2, 2, 4, 4],
            [2, 3],
            [_init("w1", 5, 2, 3, 3), _init("w2", 3, 5)],
        ),
        "w1",
        [0, 2, 4],
        {"w2": 1},
    ),
    "reducemean_reshape_literal": (
        _model(
            [
                _conv("x", "w1", "a"),
                N("ReduceMean", ["a", "axes"], ["p"], keepdims=1),
                N("Reshape", ["p", "shape"], ["f"]),
                N("Gemm", ["f", "w2"], ["y"], transB=1),
            ],
            [2, 2, 4, 4],
            [2, 3],
            [
                _init("w1", 5, 2, 3, 3),
                _const("axes", [-1, -2]),
                _const("shape", [-1, 5]),
                _init("w2", 3, 5),
            ],
            opset=18,
        ),
        "w1",
        [1, 2, 3],
        {"w2": 1},
    ),
    "channel_scale_constant": (
        _model(
            [_conv("x", "w1", "a"), N("Mul", ["a", "scale"], ["m"]), _conv("m", "w2", "y")],
            [1, 2, 4, 4],
            [1, 3, 4, 4],
            [_init("w1", 4, 2, 3, 3), _init("scale", 1, 4, 1, 1), _init("w2", 3, 4, 3, 3)],
        ),
        "w1",
        [0, 2],
        {"w2": 1},
    ),
}


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _ignoring(model: onnx.ModelProto, consumers: dict[str, int], removed: np.ndarray, size: int):
    """The original model with the consumers' input slices of removed units zeroed."""
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    for tensor in zeroed.graph.initializer:
        if tensor.name in consumers:
            array = numpy_helper.to_array(tensor).copy()
            index = [slice(None)] * array.ndim
            index[consumers[tensor.name]] = (removed[:, None] * size + np.arange(size)).ravel()
            array[tuple(index)] = 0
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return zeroed


@pytest.mark.parametrize("case", sorted(CASES))
def test_removing_units_equals_ignoring_them(case: str, tmp_path: Path) -> None:
    model, group_id, kept, consumers = CASES[case]
    working = ir.serde.deserialize_model(model)
    result = prune_structured(working, StructuredOptions(), decisions={group_id: kept})
    assert [g["id"] for g in result.pruned] == [group_id]
    save_model(working, tmp_path / "pruned.onnx")  # full checker and onnxruntime load
    pruned = onnx.load(str(tmp_path / "pruned.onnx"))
    x = RNG.standard_normal([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
    x = x.astype(np.float32)
    units = result.pruned[0]["units_before"]
    removed = np.setdiff1d(np.arange(units), kept)
    expected = _run(_ignoring(model, consumers, removed, 1), x)
    np.testing.assert_allclose(_run(pruned, x), expected, rtol=1e-5, atol=1e-5)


def _attention(literal_shapes: bool) -> onnx.ModelProto:
    """Decomposed 2-head attention over [B, S, 4] with head_dim 2, like the exporters write."""
    heads_shape = [0, 0, 2, 2] if literal_shapes else [0, 0, -1, 2]
    merged = [0, 0, 4] if literal_shapes else [0, 0, -1]
    nodes = [N("MatMul", ["x", f"w{p}"], [f"{p}m"]) for p in "qkv"]
    nodes += [N("Add", [f"{p}m", f"b{p}"], [f"{p}a"]) for p in "qkv"]
    nodes += [N("Reshape", [f"{p}a", f"split_{p}"], [f"{p}r"]) for p in "qkv"]
    nodes += [
        N("Transpose", ["qr"], ["qt"], perm=[0, 2, 1, 3]),
        N("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]),
        N("Transpose", ["vr"], ["vt"], perm=[0, 2, 1, 3]),
        N("MatMul", ["qt", "kt"], ["scores"]),
        N("Mul", ["scores", "scale"], ["scaled"]),
        N("Softmax", ["scaled"], ["probs"], axis=-1),
        N("MatMul", ["probs", "vt"], ["ctx"]),
        N("Transpose", ["ctx"], ["ct"], perm=[0, 2, 1, 3]),
        N("Reshape", ["ct", "merge"], ["cm"]),
        N("MatMul", ["cm", "wo"], ["y"]),
    ]
    inits = [_init(f"w{p}", 4, 4) for p in "qkv"] + [_init(f"b{p}", 4) for p in "qkv"]
    inits += [_const(f"split_{p}", heads_shape) for p in "qkv"]
    inits += [
        numpy_helper.from_array(np.array(0.7, np.float32), "scale"),
        _const("merge", merged),
        _init("wo", 4, 3),
    ]
    return _model(nodes, [2, 3, 4], [2, 3, 3], inits)


@pytest.mark.parametrize("literal_shapes", [True, False], ids=["literal", "inferred"])
def test_removing_a_head_equals_ignoring_it(literal_shapes: bool, tmp_path: Path) -> None:
    model = _attention(literal_shapes)
    working = ir.serde.deserialize_model(model)
    result = prune_structured(
        working, StructuredOptions(target="heads"), decisions={"heads:wo": [1]}
    )
    assert result.pruned[0]["units_before"] == 2 and result.pruned[0]["unit_size"] == 2
    save_model(working, tmp_path / "pruned.onnx")
    pruned = onnx.load(str(tmp_path / "pruned.onnx"))
    assert {t.name: list(t.dims) for t in pruned.graph.initializer}["wq"] == [4, 2]
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    # Ignoring head 0 in W_out does not remove it from the softmax of other heads: heads are
    # independent, so the reference zeroes head 0's rows of W_out.
    expected = _run(_ignoring(model, {"wo": 0}, np.array([0]), 2), x)
    np.testing.assert_allclose(_run(pruned, x), expected, rtol=1e-5, atol=1e-5)


BLOCKED = {
    "layernorm": (
        [
            N("MatMul", ["x", "w1"], ["h"]),
            N("LayerNormalization", ["h", "g", "b"], ["n"], axis=-1),
            N("MatMul", ["n", "w2"], ["y"]),
        ],
        [_init("w1", 4, 6), _init("g", 6), _init("b", 6), _init("w2", 6, 5)],
        "LayerNormalization",
    ),
    "softmax": (
        [
            N("MatMul", ["x", "w1"], ["h"]),
            N("Softmax", ["h"], ["s"], axis=-1),
            N("MatMul", ["s", "w2"], ["y"]),
        ],
        [_init("w1", 4, 6), _init("w2", 6, 5)],
        "Softmax",
    ),
    "concat_batch_axis": (  # channels through Concat: tests/test_concat_split.py
        [
            N("MatMul", ["x", "w1"], ["h"]),
            N("Concat", ["h", "h"], ["c"], axis=0),
            N("MatMul", ["c", "w2"], ["m"]),
            N("Slice", ["m", "zero", "two", "zero"], ["y"]),
        ],
        [_init("w1", 4, 3), _init("w2", 3, 5), _const("zero", [0]), _const("two", [2])],
        "Concat",
    ),
}


@pytest.mark.parametrize("case", sorted(BLOCKED))
def test_unknown_or_mixing_ops_block_with_a_reason(case: str) -> None:
    nodes, inits, op = BLOCKED[case]
    working = ir.serde.deserialize_model(_model(nodes, [2, 4], [2, 5], inits))
    with pytest.raises(Exception, match="nothing to prune structurally"):
        prune_structured(working, StructuredOptions(target="ffn"))
    groups = __import__("onnxprune.structured.dependency", fromlist=["x"]).find_channel_groups(
        working
    )
    first = next(g for g in groups if g.id == "w1")
    assert op in first.blocked


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize(
    ("model", "data", "target", "groups"),
    [
        ("digits_cnn.onnx", "digits_cnn-eval.npz", "channels", 3),
        ("digits_cnn_dynamo/model.onnx", "digits_cnn_dynamo/eval.npz", "channels", 3),
        ("adult_mlp.onnx", "adult_mlp-eval.npz", "ffn", 2),
        ("digits_transformer.onnx", "digits_transformer-eval.npz", "all", 4),
        ("digits_mobile.onnx", "digits_mobile-eval.npz", "channels", 3),
    ],
    ids=["cnn_torchscript", "cnn_dynamo", "adult", "transformer", "mobile"],
)
def test_real_fixtures_prune_verify_and_replay(model, data, target, groups, tmp_path) -> None:
    import onnxprune

    options = StructuredOptions(
        target=target, sparsity=0.5, reconstruct=True, calibration=str(FIXTURES / data)
    )
    report = onnxprune.compress_file(
        FIXTURES / model,
        tmp_path / "a.onnx",
        options,
        onnxprune.VerifyOptions(data=FIXTURES / data, latency_runs=0),
        cleanup=False,  # so that prune_file below sees the same graph
    )
    pruning = report["pruning"]
    assert pruning["totals"]["groups"] == groups
    assert pruning["macs"]["after"] < 0.6 * pruning["macs"]["before"]
    assert report["verification"]["quality"]["accuracy_after"] > 0.7
    decisions = onnxprune.decisions_from_manifest(
        onnxprune.manifest(report, FIXTURES / model), FIXTURES / model
    )
    onnxprune.prune_file(FIXTURES / model, tmp_path / "b.onnx", options, decisions=decisions)
    first, replayed = (
        {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / n)).graph.initializer}
        for n in ("a.onnx", "b.onnx")
    )
    assert first.keys() == replayed.keys()
    assert all(np.array_equal(first[name], replayed[name]) for name in first)


def test_mobile_blocks_prune_or_refuse_with_reasons(tmp_path: Path) -> None:
    """Depthwise separable + squeeze-and-excitation channels are one group; each input of the
    Concat neck is its own group, and the result loads and runs."""
    import onnxprune

    report = onnxprune.prune_file(
        FIXTURES / "digits_mobile.onnx",
        tmp_path / "m.onnx",
        StructuredOptions(target="channels", sparsity=0.5, round_to=1),
    )
    pruned = {g["id"]: g for g in report["pruning"]["groups"]}
    assert pruned["stem.0.weight"]["units_after"] == 8  # stem, depthwise and SE expand coupled
    assert pruned["branch_a.weight"]["units_after"] == pruned["branch_b.weight"]["units_after"] == 8
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((2, 1, 8, 8), np.float32)})[0].shape == (2, 10)
