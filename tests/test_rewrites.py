"""Quantization, clean-up, drop-layers and grow on the real fixtures and small graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import FIXTURE_MODELS, FIXTURES

import onnxprune
from onnxprune import Gates, InputError, QuantizeOptions, VerifyOptions
from onnxprune.cleanup import CleanupPass
from onnxprune.model_io import load_model
from onnxprune.residual import find_residual_blocks

FAST = VerifyOptions(latency_runs=0)


def _verify(name: str) -> VerifyOptions:
    return VerifyOptions(data=FIXTURE_MODELS[name][1], latency_runs=0)


def _calibration(name: str) -> str:
    return str(FIXTURES / f"{name}-calibration.npz")


@pytest.mark.parametrize(
    ("mode", "name", "max_drop"),
    [
        ("dynamic", "digits_cnn", 0.01),
        ("static", "digits_cnn", 0.01),
        ("dynamic", "adult_mlp", 0.01),
        ("int4", "digits_transformer", 0.05),
    ],
)
def test_quantization_modes_keep_accuracy(mode, name, max_drop, tmp_path: Path) -> None:
    options = QuantizeOptions(mode=mode, calibration=_calibration(name), block_size=32)
    report = onnxprune.quantize_file(
        FIXTURE_MODELS[name][0], tmp_path / "q.onnx", options, _verify(name)
    )
    quality = report["verification"]["quality"]
    assert quality["accuracy_drop"] <= max_drop
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    expected = {
        "dynamic": "DynamicQuantizeLinear",
        "static": "QuantizeLinear",
        "int4": "MatMulNBits",
    }[mode]
    assert expected in ops
    size = report["verification"]["size"]
    if mode != "int4":  # the transformer's int4 MatMuls are a small share of its bytes
        assert size["candidate"]["bytes"] < 0.5 * size["baseline"]["bytes"]


def test_static_quantization_needs_calibration(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs --calibration"):
        onnxprune.quantize_file(
            FIXTURE_MODELS["digits_cnn"][0],
            tmp_path / "q.onnx",
            QuantizeOptions(mode="static"),
            FAST,
        )


def test_auto_exclude_keeps_sensitive_layers_in_float(tmp_path: Path) -> None:
    name = "digits_mlp"
    options = QuantizeOptions(mode="dynamic", calibration=_calibration(name))
    report = onnxprune.quantize_file(
        FIXTURE_MODELS[name][0],
        tmp_path / "q.onnx",
        options,
        _verify(name),
        Gates(min_cosine=0.999999),  # dynamic int8 reaches 0.99999 at the quality batch of 1
        auto_exclude=True,
    )
    auto = report["quantization"]["auto_exclude"]
    assert auto["needed"] and auto["attempts"][0]["float_layers"] == 1
    assert auto["satisfied"] is report["passed"]
    assert report["quantization"]["excluded_nodes"] == sorted(auto["float_layers"])


def test_cleanup_folds_batchnorm_and_keeps_outputs(tmp_path: Path) -> None:
    report = onnxprune.compress_file(
        FIXTURE_MODELS["digits_cnn"][0],
        tmp_path / "c.onnx",
        onnxprune.PruneOptions(0.0),
        _verify("digits_cnn"),
    )
    assert report["cleanup"]["nodes_removed"]["BatchNormalization"] == 4
    cleanup_stage = report["stages"][0]
    assert cleanup_stage["stage"] == "cleanup" and cleanup_stage["max_abs_diff"] <= 1e-5
    model = load_model(tmp_path / "c.onnx")
    assert not any(node.op_type == "BatchNormalization" for node in model.graph)


def test_cleanup_removes_dropout_and_identity() -> None:
    text = """<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[2, 3] x) => (float[2, 3] y) {
        d = Dropout (x)
        i = Identity (d)
        y = Relu (i)
    }"""
    model = ir.serde.deserialize_model(onnx.parser.parse_model(text))
    cleanup = CleanupPass()
    cleanup(model)
    assert [n.op_type for n in model.graph] == ["Relu"]
    assert cleanup.counts == {"Dropout": 1, "Identity": 1}


def test_cleanup_step_failing_without_a_message_is_skipped_with_its_type(monkeypatch) -> None:
    import onnxprune.cleanup as cleanup_module

    def silent_failure(model: ir.Model) -> None:
        raise AssertionError()

    monkeypatch.setattr(cleanup_module, "_STEPS", (("optimize", silent_failure),))
    text = """<ir_version: 8, opset_import: ["" : 17]>
    agraph (float[2, 3] x) => (float[2, 3] y) {
        y = Relu (x)
    }"""
    model = ir.serde.deserialize_model(onnx.parser.parse_model(text))
    cleanup = CleanupPass()
    cleanup(model)
    assert cleanup.skipped == {"optimize": "AssertionError"}
    assert [n.op_type for n in model.graph] == ["Relu"]


def test_compress_with_int8_reports_every_stage(tmp_path: Path) -> None:
    name = "adult_mlp"
    report = onnxprune.compress_file(
        FIXTURE_MODELS[name][0],
        tmp_path / "c.onnx",
        onnxprune.StructuredOptions(
            target="ffn", sparsity=0.5, reconstruct=True, calibration=_calibration(name)
        ),
        _verify(name),
        quantize=QuantizeOptions(mode="dynamic"),
    )
    assert [s["stage"] for s in report["stages"]] == ["cleanup", "prune", "quantize"]
    sizes = [s["bytes"] for s in report["stages"]]
    assert sizes[2] < sizes[1] < sizes[0]
    assert report["verification"]["quality"]["accuracy_drop"] < 0.02


@pytest.mark.parametrize(("name", "count"), [("digits_cnn", 1), ("digits_transformer", 4)])
def test_residual_blocks_are_found(name: str, count: int) -> None:
    model = load_model(FIXTURE_MODELS[name][0])
    from onnx_ir.passes.common import NameFixPass, ShapeInferencePass

    NameFixPass()(model)
    ShapeInferencePass()(model)
    assert len(find_residual_blocks(model)) == count


def test_drop_layers_removes_the_least_influential_block(tmp_path: Path) -> None:
    name = "digits_transformer"
    options = onnxprune.DropOptions(blocks=1, calibration=_calibration(name))
    report = onnxprune.drop_layers(
        FIXTURE_MODELS[name][0], tmp_path / "d.onnx", options, _verify(name)
    )
    blocks = report["drop_layers"]["blocks"]
    dropped = [b for b in blocks if b["dropped"]]
    assert len(dropped) == 1
    assert dropped[0]["score"] == min(b["score"] for b in blocks)
    before = sum(1 for _ in load_model(FIXTURE_MODELS[name][0]).graph)
    assert sum(1 for _ in load_model(tmp_path / "d.onnx").graph) < before - dropped[0]["nodes"] / 2


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("digits_cnn", {"deeper": "/stem/stem.1/stem.1.2/Relu"}),
        ("adult_mlp", {"deeper": "/net/net.2/Gemm"}),
        ("digits_cnn", {"wider": "block.0.0.weight", "factor": 1.5}),
        ("digits_transformer", {"wider": "heads:onnx::MatMul_260", "factor": 2.0}),
    ],
    ids=["deeper_conv_relu", "deeper_linear", "wider_channels", "wider_heads"],
)
def test_grow_preserves_the_function(name: str, kwargs: dict, tmp_path: Path) -> None:
    report = onnxprune.grow(FIXTURE_MODELS[name][0], tmp_path / "g.onnx", _verify(name), **kwargs)
    assert report["passed"]
    assert report["gates"][0]["value"] <= 1e-4
    assert report["grow"]["parameters"] > 0


def test_grow_refuses_unknown_targets(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no node or tensor named"):
        onnxprune.grow(FIXTURE_MODELS["digits_cnn"][0], tmp_path / "g.onnx", FAST, deeper="nope")
    with pytest.raises(InputError, match="channels reach the graph output"):
        onnxprune.grow(
            FIXTURE_MODELS["digits_cnn"][0], tmp_path / "g.onnx", FAST, wider="head.weight"
        )


SMALL_RESIDUAL = """<ir_version: 8, opset_import: ["" : 17]>
agraph (float[N, 4] x) => (float[N, 4] y)
<float[4, 4] w1 = {W1}, float[4, 4] w2 = {W2}> {
    h = MatMul (x, w1)
    r = Relu (h)
    f = MatMul (r, w2)
    s = Add (x, f)
    t = MatMul (s, w1)
    y = Add (t, x)
}"""
W1 = np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4)
W2 = np.linspace(1, -0.5, 16, dtype=np.float32).reshape(4, 4)


def _small_residual() -> ir.Model:
    text = SMALL_RESIDUAL.replace("W1", ",".join(map(str, W1.ravel())))
    text = text.replace("W2", ",".join(map(str, W2.ravel())))
    return ir.serde.deserialize_model(onnx.parser.parse_model(text))


def _run(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]


def test_residual_blocks_on_a_small_graph_and_their_removal(tmp_path: Path) -> None:
    """x + MatMul(Relu(MatMul(x))) is a block; dropping it leaves y = x @ w1 + x."""
    from onnx_ir.passes.common import NameFixPass, ShapeInferencePass

    from onnxprune.model_io import save_model
    from onnxprune.residual import RemoveBlocksPass

    model = _small_residual()
    NameFixPass()(model)
    ShapeInferencePass()(model)
    blocks = find_residual_blocks(model)
    ops = {n.name: n.op_type for n in model.graph}
    assert sorted(ops[name] for name in blocks[0].nodes) == ["MatMul", "MatMul", "Relu"]
    RemoveBlocksPass([blocks[0]])(model)
    save_model(model, tmp_path / "dropped.onnx")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "dropped.onnx", x), x @ W1 + x, rtol=1e-5, atol=1e-5)


def test_deepen_a_small_graph_is_exact(tmp_path: Path) -> None:
    from onnxprune.grow import DeepenPass
    from onnxprune.model_io import save_model

    model = _small_residual()
    save_model(model.clone(), tmp_path / "original.onnx")
    DeepenPass("r")(model)  # the Relu's output tensor: parsed nodes have no names
    save_model(model, tmp_path / "deeper.onnx")
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    expected = _run(tmp_path / "original.onnx", x)
    np.testing.assert_allclose(_run(tmp_path / "deeper.onnx", x), expected, rtol=1e-6, atol=1e-6)
    assert [n.op_type for n in model.graph].count("Relu") == 2
