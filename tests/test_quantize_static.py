"""Static int8: the rule table on a transformer-shaped graph, the fixes that make it run and
keep floats float, and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FIXTURES, run_cli
from quant_models import tiny_transformer, token_data

from onnxprune.data import input_specs, load_dataset
from onnxprune.model_io import load_model
from onnxprune.quant import static
from onnxprune.quant.embeddings import quantize_table
from onnxprune.quant.rules import static_plan
from onnxprune.quantize import QuantizeOptions, quantize_model_file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    return tiny_transformer(folder / "tiny.onnx"), token_data(folder / "tokens.npz")


@pytest.mark.parametrize(
    ("node", "precision", "why"),
    [
        ("q/MatMul", "int8", "constant weight"),
        ("ffn2/MatMul", "int8", "constant weight"),
        ("attention/MatMul", "float", "attention-score"),
        ("attention/MatMul_1", "float", "attention-score"),
        ("attention/Softmax", "float", "attention probabilities"),
        ("gelu/Erf", "float", "GELU"),
        ("attention/residual", "float", "residual"),
        ("ln1", "float", "normalisation"),
        ("ffn1", "absent", ""),
    ],
)
def test_rule_table_on_transformer(tiny, node: str, precision: str, why: str) -> None:
    plan = {d.node: d for d in static_plan(onnx.load(str(tiny[0])), {})}
    if precision == "absent":
        assert node not in plan
        return
    assert plan[node].precision == precision
    assert why in plan[node].reason


def test_excluded_weight_op_stays_float_with_reason(tiny) -> None:
    plan = {d.node: d for d in static_plan(onnx.load(str(tiny[0])), {"o/MatMul": "user"})}
    assert (plan["o/MatMul"].precision, plan["o/MatMul"].reason) == ("float", "user")


def _quantize_static(tiny, tmp_path: Path, **options) -> tuple[Path, dict]:
    model, tokens = tiny
    data = load_dataset(tokens, input_specs(load_model(model)))
    settings = QuantizeOptions(mode="static", calibration=str(tokens), **options)
    out = tmp_path / "static.onnx"
    return out, quantize_model_file(model, out, settings, data)


def _run(path: Path, tokens: Path) -> np.ndarray:
    feed = dict(np.load(tokens))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_static_keeps_float_consumers_float(tiny, tmp_path: Path) -> None:
    out, section = _quantize_static(tiny, tmp_path, smooth="off")
    model = onnx.load(str(out))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    float_ops = ("LayerNormalization", "Softmax", "Erf")
    for node in model.graph.node:
        if node.op_type in float_ops or node.name.endswith("residual"):
            assert all(producers.get(i) != "DequantizeLinear" for i in node.input), node.name
    int8 = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]
    fed = [n.name for n in int8 if producers.get(n.input[0]) == "QuantizeLinear"]
    assert sorted(fed) == sorted(f"{k}/MatMul" for k in ("q", "k", "v", "o", "ffn1", "ffn2"))
    assert section["fused_matmuls"] == 6
    assert section["float_consumers_rewired"] > 0
    gather = next(n for n in model.graph.node if n.name == "embeddings/Gather")
    assert gather.op_type == "GatherBlockQuantized"
    reference, result = _run(tiny[0], tiny[1]), _run(out, tiny[1])
    cosine = np.sum(reference * result, -1) / (
        np.linalg.norm(reference, axis=-1) * np.linalg.norm(result, axis=-1)
    )
    assert cosine.mean() > 0.999


def test_symbolic_shape_failure_falls_back(tiny, tmp_path: Path, monkeypatch) -> None:
    real = static.quant_pre_process

    def failing(source, target, skip_symbolic_shape=False, **kwargs):
        if not skip_symbolic_shape:
            Path("sym_shape_infer_temp.onnx").write_bytes(b"")  # what onnxruntime leaves
            raise Exception("Incomplete symbolic shape inference")
        return real(source, target, skip_symbolic_shape=True, **kwargs)

    monkeypatch.setattr(static, "quant_pre_process", failing)
    monkeypatch.chdir(tmp_path)
    out, section = _quantize_static(tiny, tmp_path)
    assert "symbolic shape inference incomplete: skipped" in section["pre_processing"]
    assert not (tmp_path / "sym_shape_infer_temp.onnx").exists()
    assert out.exists()


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_static_options_reach_the_tool(tiny, tmp_path: Path, method: str) -> None:
    options = {"calibrate_method": method, "smooth": "0.5", "mul_budget": None}
    out, section = _quantize_static(tiny, tmp_path, **options)
    assert section["calibrate_method"] == method
    assert section["smoothed_tensors"] == 4  # h0 (Q/K/V), context, h1, gelu
    names = {n.name for n in onnx.load(str(out)).graph.node}
    assert "h0_smooth" in names


def test_static_smooths_by_default() -> None:
    # SmoothQuant at 0.95 (NNCF's strength for MatMuls): MiniLM 0.9934 -> 0.998 once activation
    # ranges come from real tokens (onnxprune.quant.ranges)
    assert QuantizeOptions(mode="static").smooth_alphas() == (0.95,)


def test_cli_static_on_transformer(tiny, tmp_path: Path) -> None:
    model, tokens = tiny
    out = tmp_path / "cli.onnx"
    args = ["--calibration", tokens, "--data", tokens, "--latency-runs", "0", "--json"]
    done = run_cli("quantize", model, "-o", out, "--mode", "static", *args)
    assert done.returncode == 0, done.stderr
    assert '"precision": "int8"' in done.stdout
    assert '"smooth": "0.95"' in done.stdout  # the command line's default strength


def test_int8_embedding_table_round_trip_within_half_a_step() -> None:
    table = np.random.default_rng(3).standard_normal((50, 256)).astype(np.float32)
    data, scale, zero = quantize_table(table, 128)
    restored = (data.reshape(50, 2, 128).astype(np.float64) - zero[..., None]) * scale[..., None]
    error = np.abs(restored.reshape(50, 256) - table)
    assert np.all(error <= np.repeat(scale, 128, axis=1) / 2 + 1e-6)
    assert data.dtype == np.uint8 and error.max() > 0


def test_cnn_residual_stays_int8_so_every_conv_fuses(tmp_path: Path) -> None:
    model = FIXTURES / "digits_cnn.onnx"
    calibration = FIXTURES / "digits_cnn-calibration.npz"
    data = load_dataset(calibration, input_specs(load_model(model)))
    out = tmp_path / "cnn.onnx"
    options = QuantizeOptions(mode="static", calibration=str(calibration))
    quantize_model_file(model, out, options, data)
    settings = ort.SessionOptions()
    settings.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out), settings, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(settings.optimized_model_filepath).graph.node]
    assert fused.count("QLinearConv") == 4 and "Conv" not in fused
