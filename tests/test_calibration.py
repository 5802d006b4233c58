"""The calibration engine and data-aware methods on small graphs with hand-computable answers."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import FIXTURE_MODELS, parse_model, run_cli

from onnxprune import InputError, PruneOptions
from onnxprune.activations import ConvView, weight_matrix
from onnxprune.allocation import allocate
from onnxprune.calibration import CalibrationOptions, collect_statistics
from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.model_io import load_model
from onnxprune.ops import WeightLayout
from onnxprune.pruning import prune_model
from onnxprune.sparsegpt import sparsegpt_prune
from onnxprune.weights import find_weights

HEADER = '<ir_version: 8, opset_import: ["" : 17]>\n'
TWO_LAYERS = HEADER + (
    "agraph (float[N, 3] x) => (float[N, 2] y) "
    "<float[3, 4] w1 = {1.,2.,3.,4.,5.,6.,7.,8.,9.,10.,11.,12.}, "
    "float[2, 4] w2 = {1.,0.,1.,0.,0.,1.,0.,1.}> "
    "{ h = MatMul (x, w1) \n r = Relu (h) \n y = Gemm <transB: int = 1> (r, w2) }"
)


def _model(text: str) -> ir.Model:
    return ir.serde.deserialize_model(parse_model(text))


def test_statistics_of_graph_input_and_hidden_layer() -> None:
    model = _model(TWO_LAYERS)
    x = np.array([[1, -2, 0.5], [0, 1, -1], [2, 2, 2], [-1, 0, 3]], np.float32)
    weights, _ = find_weights(model)
    stats, refused = collect_statistics(
        model, weights, Dataset({"x": x}), CalibrationOptions(batch_size=3, gram=True)
    )
    assert refused == {}
    first, second = stats["w1"], stats["w2"]
    assert first.rows == 4
    np.testing.assert_allclose(first.sum_sq, (x.astype(np.float64) ** 2).sum(0), rtol=1e-12)
    np.testing.assert_allclose(first.gram, x.T.astype(np.float64) @ x, rtol=1e-12)
    hidden = np.maximum(x.astype(np.float64) @ np.arange(1, 13).reshape(3, 4), 0)
    np.testing.assert_allclose(second.sum_sq, (hidden**2).sum(0), rtol=1e-6)
    np.testing.assert_allclose(second.mean, hidden.mean(0), rtol=1e-6)
    np.testing.assert_allclose(second.norms, np.sqrt((hidden**2).sum(0)), rtol=1e-6)


def test_padded_positions_are_excluded() -> None:
    model = _model(
        HEADER
        + "agraph (float[B, S, 2] x, int64[B, S] attention_mask) => (float[B, S, 2] y) "
        "<float[2, 2] w = {1., 2., 3., 4.}> "
        "{ m = Cast <to: int = 1> (attention_mask) \n u = Unsqueeze (m, axes) \n"
        "  xm = Mul (x, u) \n y = MatMul (xm, w) }".replace(
            "<float[2, 2] w = {1., 2., 3., 4.}>",
            "<float[2, 2] w = {1., 2., 3., 4.}, int64[1] axes = {2}>",
        )
    )
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2) + 1
    mask = np.array([[1, 1, 0], [1, 0, 0]], np.int64)
    weights, _ = find_weights(model)
    dataset = Dataset({"x": x, "attention_mask": mask})
    stats, _ = collect_statistics(model, weights, dataset, CalibrationOptions(gram=True))
    real = x[mask.astype(bool)].astype(np.float64)
    assert stats["w"].rows == 3
    np.testing.assert_allclose(stats["w"].gram, real.T @ real)
    with pytest.raises(InputError, match="not a model input"):
        collect_statistics(model, weights, dataset, CalibrationOptions(mask_input="mask"))


def test_conv_unfolding_reproduces_the_convolution() -> None:
    text = HEADER + (
        "agraph (float[2, 3, 6, 5] x) => (float[2, 4, 3, 2] y) <float[4, 3, 3, 2] w = {VALUES}> "
        "{ y = Conv <pads: ints = [1, 0, 0, 1], strides: ints = [2, 2], dilations: ints = [1, 2]>"
        " (x, w) }"
    ).replace("VALUES", ",".join(str(v) for v in np.linspace(-1, 1, 72)))
    proto = parse_model(text)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    w = np.linspace(-1, 1, 72).reshape(4, 3, 3, 2)
    view = ConvView(kernel=(3, 2), pads=(1, 0, 0, 1), strides=(2, 2), dilations=(1, 2))
    rows = view.rows(x.astype(np.float64))
    got = (rows @ weight_matrix(w, WeightLayout(0, 1)).T).reshape(2, 3, 2, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _output_error(weight: np.ndarray, pruned: np.ndarray, x: np.ndarray) -> float:
    return float(np.linalg.norm(x @ (weight - pruned).T))


def test_sparsegpt_beats_masking_on_correlated_inputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 32)) @ rng.standard_normal((32, 32))
    weight = rng.standard_normal((16, 32))
    gram = x.T @ x
    pruned = sparsegpt_prune(weight, gram, len(x), 0.5, block_size=8)
    assert np.count_nonzero(pruned == 0) == 16 * 16
    scores = np.abs(weight) * np.sqrt((x**2).sum(0))
    keep = np.argsort(np.argsort(scores, axis=1), axis=1) >= 16
    masked = np.where(keep, weight, 0)
    unrepaired = np.where(pruned != 0, weight, 0)  # SparseGPT's mask without its updates
    error = _output_error(weight, pruned, x)
    assert error < _output_error(weight, masked, x)
    assert error < 0.8 * _output_error(weight, unrepaired, x)
    two_four = sparsegpt_prune(weight, gram, len(x), 0.5, pattern=(2, 4))
    assert ((two_four != 0).reshape(16, 8, 4).sum(axis=2) == 2).all()


def test_owl_keeps_the_target_on_average() -> None:
    rng = np.random.default_rng(1)
    scores = {
        "a": rng.random((40, 10)),
        "b": rng.standard_cauchy((20, 30)) ** 2,
        "c": rng.random(50),
    }
    sparsity = allocate("owl", scores, 0.6)
    sizes = {name: s.size for name, s in scores.items()}
    mean = sum(sparsity[n] * sizes[n] for n in scores) / sum(sizes.values())
    assert mean == pytest.approx(0.6, abs=1e-9)
    assert sparsity["b"] < sparsity["a"]  # heavy-tailed scores have outliers: keep more


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("allocation", ["uniform", "owl", "global"])
def test_data_aware_methods_hit_the_target_on_fixtures(method: str, allocation: str) -> None:
    path, data = FIXTURE_MODELS["adult_mlp"]
    model = load_model(path)
    calibration = load_dataset(data, input_specs(model))
    result = prune_model(
        model, PruneOptions(0.7, method=method, allocation=allocation), calibration
    )
    assert abs(result.totals()["sparsity_after"] - 0.7) <= 0.005


def test_data_aware_methods_need_calibration() -> None:
    with pytest.raises(InputError, match="needs calibration data"):
        prune_model(load_model(FIXTURE_MODELS["adult_mlp"][0]), PruneOptions(0.5, method="wanda"))


def test_sequential_stages_with_a_graph_input_fed_first_layer() -> None:
    path, data = FIXTURE_MODELS["digits_mlp"]
    model = load_model(path)
    calibration = load_dataset(data, input_specs(model))
    result = prune_model(model, PruneOptions(0.5, method="sparsegpt", sequential=True), calibration)
    assert abs(result.totals()["sparsity_after"] - 0.5) <= 0.005


def test_overflowing_calibration_data_is_refused_in_one_line(tmp_path) -> None:
    """Inputs near float32's limit overflow the activation statistics: SparseGPT's Hessian
    cannot be inverted, so the command refuses (exit 2, one line) instead of crashing."""
    model, data = FIXTURE_MODELS["adult_mlp"]
    arrays = dict(np.load(data))
    arrays["input"] = np.full_like(arrays["input"], 3e38)
    np.savez(tmp_path / "c.npz", **arrays)
    out = tmp_path / "out.onnx"
    calibration = tmp_path / "c.npz"
    run = run_cli("prune", model, "-o", out, "--method", "sparsegpt", "--calibration", calibration)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "not finite" in run.stderr
    assert not out.exists()
