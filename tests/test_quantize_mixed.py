"""Mixed smoothing: a SmoothQuant Mul kept only where it measurably helps the model output.

The tiny post-LN block has three groups whose scale needs a Mul (Q/K/V and FFN1 read a LayerNorm
output that the residual also reads; FFN2 reads the GELU) and one that folds (the context into
the value projection)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli
from quant_models import tiny_transformer, token_data

from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.model_io import load_model
from onnxprune.quant import mixed, static
from onnxprune.quant.capture import capture_rows
from onnxprune.quant.mixed import ChooseSmoothingMulsPass, output_cosine, transplant
from onnxprune.quant.options import QuantizeOptions, parse_mul_budget
from onnxprune.quant.rules import static_plan

SETTINGS = static.StaticSettings(smooth_alphas=(0.95,))


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    model, tokens = tiny_transformer(folder / "tiny.onnx"), token_data(folder / "tokens.npz")
    data = load_dataset(tokens, input_specs(load_model(model)))
    prepared = folder / "prepared.onnx"
    static.preprocess(model, prepared, external=False)
    plan = static_plan(onnx.load(str(prepared)), {})
    int8 = {d.node for d in plan if d.precision == "int8"}
    smoothed = static._quantize_variant(prepared, folder / "a.onnx", data, int8, SETTINGS, True)
    plain = static._quantize_variant(prepared, folder / "b.onnx", data, int8, SETTINGS, False)
    return smoothed, plain, data


def _run(model: onnx.ModelProto, data: Dataset) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session.run(None, data.slice(0, data.samples))[0]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _muls(model: onnx.ModelProto) -> list[str]:
    return sorted(n.name for n in model.graph.node if n.name.endswith("_smooth"))


def test_plain_variant_smooths_only_what_folds(variants) -> None:
    smoothed, plain, _ = variants
    assert sorted(smoothed.smoother.unfolded) == ["gelu", "h0", "h1"]
    assert _muls(smoothed.quantized) == ["gelu_smooth", "h0_smooth", "h1_smooth"]
    assert set(plain.smoother.placed.values()) == {"value projection"}
    assert _muls(plain.quantized) == []


def test_transplanting_every_mul_group_gives_the_plain_model(variants) -> None:
    smoothed, plain, data = variants
    mixed = _copy(smoothed.quantized)
    for tensor, names in sorted(smoothed.smoother.unfolded.items()):
        transplant(mixed, plain.quantized, tensor, names)
    onnx.checker.check_model(mixed)
    assert _muls(mixed) == []
    ops = sorted(n.op_type for n in mixed.graph.node)
    assert ops == sorted(n.op_type for n in plain.quantized.graph.node)
    np.testing.assert_allclose(_run(mixed, data), _run(plain.quantized, data), rtol=0, atol=1e-6)
    names = {t.name for t in mixed.graph.initializer}
    assert not any(n.endswith("_smooth_scale") for n in names)  # the dropped Muls' constants


def test_transplanting_one_group_keeps_the_others(variants) -> None:
    smoothed, plain, data = variants
    mixed = _copy(smoothed.quantized)
    transplant(mixed, plain.quantized, "gelu", smoothed.smoother.unfolded["gelu"])
    assert _muls(mixed) == ["h0_smooth", "h1_smooth"]
    before, after = _run(smoothed.quantized, data), _run(mixed, data)
    assert np.abs(after - before).max() > 1e-4  # FFN2 now reads differently quantized input


def _chooser(variants, budget: float) -> tuple[ChooseSmoothingMulsPass, onnx.ModelProto]:
    smoothed, plain, data = variants
    outputs = [o.name for o in smoothed.model.graph.output]

    def run(model: onnx.ModelProto) -> dict:
        return capture_rows(model, outputs, data, max_rows=1 << 30)

    groups = {
        t: (n, smoothed.smoother.rows[t].shape[1]) for t, n in smoothed.smoother.unfolded.items()
    }
    model = _copy(smoothed.quantized)
    chooser = ChooseSmoothingMulsPass(plain.quantized, groups, run, run(smoothed.model), budget)
    chooser.dropped = chooser.call(model)
    return chooser, model


@pytest.mark.parametrize(("budget", "dropped"), [("zero", None), ("all", 3)])
def test_budget_bounds_the_output_loss(variants, budget: str, dropped) -> None:
    chooser, model = _chooser(variants, 0.0 if budget == "zero" else 0.5)
    losses = [d["cosine_loss_with_earlier_drops"] for d in chooser.decisions.values()]
    if dropped is not None:
        assert len(chooser.dropped) == dropped
    for tensor, decision in chooser.decisions.items():
        assert (tensor in chooser.dropped) == (decision["smoothing"] == "dropped (no Mul)")
    if budget == "zero":
        kept = [t for t, d in chooser.decisions.items() if d["cosine_loss_with_earlier_drops"] > 0]
        assert sorted(kept) == sorted(set(chooser.decisions) - set(chooser.dropped))
        assert max(losses) > 0  # smoothing helps somewhere on this block
    assert _muls(model) == sorted(
        f"{t}_smooth" for t in set(chooser.decisions) - set(chooser.dropped)
    )


def test_choice_is_deterministic_and_measured_on_the_result(variants) -> None:
    first, model = _chooser(variants, 2e-4)
    second, again = _chooser(variants, 2e-4)
    assert first.dropped == second.dropped and first.decisions == second.decisions
    assert _muls(model) == _muls(again)
    smoothed, _, data = variants
    outputs = [o.name for o in smoothed.model.graph.output]
    reference = capture_rows(smoothed.model, outputs, data, max_rows=1 << 30)
    full = output_cosine(capture_rows(smoothed.quantized, outputs, data, 1 << 30), reference)
    result = output_cosine(capture_rows(model, outputs, data, max_rows=1 << 30), reference)
    assert full - result <= 2e-4 + 1e-9


def test_cli_mul_budget_drops_muls_and_says_why(tmp_path) -> None:
    model, tokens = tiny_transformer(tmp_path / "t.onnx"), token_data(tmp_path / "t.npz")
    out = tmp_path / "q.onnx"
    args = ["--calibration", tokens, "--latency-runs", "0", "--mul-budget", "0.5", "--json"]
    done = run_cli("quantize", model, "-o", out, "--mode", "static", *args)
    assert done.returncode == 0, done.stderr
    assert _muls(onnx.load(str(out))) == []
    section = json.loads(done.stdout)["quantization"]
    assert section["mul_budget"] == 0.5
    assert section["smoothing_muls"]["dropped"] == 3
    reasons = {d["node"]: d["why"] for d in section["layers"]}
    assert "SmoothQuant 0.95: not smoothed, no Mul" in reasons["ffn2/MatMul"]
    assert "SmoothQuant 0.95, scale folded into the value projection" in reasons["o/MatMul"]


def test_cli_keeps_every_mul_by_default(tmp_path) -> None:
    """The Mul choice triples static quantize time for no measured speed: it is opt-in."""
    model, tokens = tiny_transformer(tmp_path / "t.onnx"), token_data(tmp_path / "t.npz")
    out = tmp_path / "q.onnx"
    args = ["--calibration", tokens, "--latency-runs", "0", "--json"]
    done = run_cli("quantize", model, "-o", out, "--mode", "static", *args)
    assert done.returncode == 0, done.stderr
    section = json.loads(done.stdout)["quantization"]
    assert section["mul_budget"] is None
    assert len(_muls(onnx.load(str(out)))) == 3
    assert "smoothing_muls" not in section


@pytest.mark.parametrize(("text", "value"), [("off", None), ("0", 0.0), ("0.001", 0.001)])
def test_mul_budget_values(text: str, value) -> None:
    assert parse_mul_budget(text) == value


@pytest.mark.parametrize("text", ["1", "-0.1", "some"])
def test_bad_mul_budget_is_refused_with_its_value(text: str) -> None:
    with pytest.raises(
        InputError, match=f"--mul-budget must be off or a number in .0, 1., got {text}"
    ):
        parse_mul_budget(text)
    with pytest.raises(InputError, match="--mul-budget"):
        QuantizeOptions(mode="static", calibration="c.npz", mul_budget=-1.0).validate()


def test_a_graph_the_transplant_cannot_follow_keeps_every_mul(variants, monkeypatch) -> None:
    smoothed, plain, data = variants
    chosen = static._Variant(
        smoothed.model, _copy(smoothed.quantized), smoothed.smoother, smoothed.corrector, {}
    )

    def refuse(*args) -> None:
        raise ValueError("q: no single path back to h0")

    monkeypatch.setattr(mixed, "transplant", refuse)
    result = mixed.mix_smoothing(chosen, lambda: plain, data, 0.5)
    assert result.dropped == []
    assert result.report["not_chosen"] == "every Mul kept: q: no single path back to h0"
    assert _muls(chosen.quantized) == ["gelu_smooth", "h0_smooth", "h1_smooth"]
    reasons = mixed.smoothing_reasons(smoothed.smoother, result)
    assert "Mul kept" in reasons["ffn2/MatMul"]
