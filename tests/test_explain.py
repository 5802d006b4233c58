"""Explanation drift: occlusion attributions known in closed form, agreement metrics, the gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import FIXTURE_MODELS, FIXTURES
from onnx import TensorProto, helper, numpy_helper

from cli.main import main
from onnxprune.attribution import sign_agreement, spearman, top_k_overlap
from onnxprune.data import input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.explain import ExplainOptions, Scorer, attribute, explain_models
from onnxprune.normalize import load_normalized
from onnxprune.occlusion import make_occluder
from onnxprune.verify import VerifyOptions

F, C = 12, 3
DOUBLE = TensorProto.DOUBLE


def _save(path: Path, nodes, inputs, weights: dict[str, np.ndarray], out=DOUBLE) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info("logits", out, ["N", C if out == DOUBLE else 1])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _linear(path: Path, weight: np.ndarray) -> Path:
    """logits = input @ W + b, in float64 so occlusion is exact to rounding."""
    return _save(
        path,
        [helper.make_node("Gemm", ["input", "W", "b"], ["logits"])],
        [helper.make_tensor_value_info("input", DOUBLE, ["N", weight.shape[0]])],
        {"W": weight, "b": np.arange(C, dtype=np.float64)},
    )


def _weights() -> np.ndarray:
    """Weights whose magnitude grows with the feature index (distinct importances)."""
    signs = np.where(np.random.default_rng(1).random((F, C)) < 0.5, -1.0, 1.0)
    return signs * np.arange(1, F + 1, dtype=np.float64)[:, None] * np.array([1.0, 0.7, 0.4])


def _data(path: Path, samples: int = 40, **arrays: np.ndarray) -> Path:
    x = np.random.default_rng(0).standard_normal((samples, F))
    np.savez(path, input=x, **arrays)
    return path


def _run(model: Path, data: Path, indices: list[int], patch: int | None = None):
    dataset = load_dataset(data, input_specs(load_normalized(model)))
    occluder = make_occluder(input_specs(load_normalized(model)), dataset, patch)
    scorer = Scorer(model, "logits", 0, 64)
    return dataset, occluder, attribute((scorer, scorer), occluder, dataset, indices, True)


def test_linear_occlusion_equals_weight_times_input_minus_baseline(tmp_path: Path) -> None:
    weight = _weights()
    model, data = _linear(tmp_path / "m.onnx", weight), _data(tmp_path / "d.npz")
    x = np.load(data)["input"]
    indices = [0, 7, 31]
    _, occluder, (_, before, after) = _run(model, data, indices)
    assert occluder.kind == "feature" and occluder.units == F
    for row, index in enumerate(indices):
        predicted = int(np.argmax(x[index] @ weight))
        expected = weight[:, predicted] * (x[index] - x.mean(axis=0))
        np.testing.assert_allclose(before[row], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(before, after)


def test_image_patch_attribution_is_the_patch_sum(tmp_path: Path) -> None:
    weight = np.random.default_rng(2).standard_normal((16, C))
    model = _save(
        tmp_path / "img.onnx",
        [
            helper.make_node("Flatten", ["input"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        ],
        [helper.make_tensor_value_info("input", DOUBLE, ["N", 1, 4, 4])],
        {"W": weight},
    )
    x = np.random.default_rng(3).standard_normal((20, 1, 4, 4))
    np.savez(tmp_path / "img.npz", input=x)
    _, occluder, (_, before, _) = _run(model, tmp_path / "img.npz", [4], patch=2)
    assert occluder.grid == (2, 2)
    centred = (x[4] - x.mean(axis=0)).reshape(4, 4)
    contribution = centred.reshape(16) * weight[:, int(np.argmax(x[4].reshape(16) @ weight))]
    contribution = contribution.reshape(4, 4)
    expected = [contribution[r : r + 2, c : c + 2].sum() for r in (0, 2) for c in (0, 2)]
    np.testing.assert_allclose(before[0], expected, rtol=1e-12, atol=1e-12)


def test_tokens_are_hidden_by_the_attention_mask_and_padding_is_not_a_unit(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(4)
    table, weight = rng.standard_normal((10, 3)), rng.standard_normal((3, C))
    int64 = TensorProto.INT64
    model = _save(
        tmp_path / "text.onnx",
        [
            helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
            helper.make_node("Cast", ["attention_mask"], ["m"], to=DOUBLE),
            helper.make_node("Unsqueeze", ["m", "axis"], ["m3"]),
            helper.make_node("Mul", ["emb", "m3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
        ],
        [
            helper.make_tensor_value_info("input_ids", int64, ["N", 5]),
            helper.make_tensor_value_info("attention_mask", int64, ["N", 5]),
        ],
        {"E": table, "W": weight, "axis": np.array([2]), "axis1": np.array([1])},
    )
    ids = rng.integers(0, 10, size=(6, 5))
    mask = np.array([[1, 1, 1, 0, 0]] * 3 + [[1, 1, 1, 1, 1]] * 3)
    np.savez(tmp_path / "t.npz", input_ids=ids, attention_mask=mask)
    _, occluder, (_, before, _) = _run(model, tmp_path / "t.npz", [0, 4])
    assert occluder.kind == "token" and occluder.mask_input == "attention_mask"
    for row, index in enumerate([0, 4]):
        real = int(mask[index].sum())
        predicted = int(np.argmax(table[ids[index, :real]].sum(axis=0) @ weight))
        expected = table[ids[index, :real]] @ weight[:, predicted]
        np.testing.assert_allclose(before[row, :real], expected, rtol=1e-12, atol=1e-12)
        assert np.isnan(before[row, real:]).all()  # padded positions are not attributed


def test_metrics_on_known_vectors() -> None:
    a = np.array([5.0, -4.0, 3.0, 0.5, 0.1])
    assert spearman(a, a) == 1.0 and spearman(a, -a) == pytest.approx(-1.0)
    assert top_k_overlap(a, a[::-1], 2) == 0.0 and top_k_overlap(a, a * 2, 3) == 1.0
    assert sign_agreement(a, -a) == 0.0 and sign_agreement(a, np.abs(a), k=2) == 0.5


def _explain(model: Path, candidate: Path, data: Path, samples: int = 20) -> dict:
    options = VerifyOptions(data=data, latency_runs=0)
    return explain_models(model, candidate, "logits", True, options, ExplainOptions(samples, 3))


def test_identical_models_agree_fully_and_runs_repeat(tmp_path: Path) -> None:
    model, data = _linear(tmp_path / "m.onnx", _weights()), _data(tmp_path / "d.npz")
    section = _explain(model, model, data)
    assert section["aggregate"] == {
        "agreement": 1.0,
        "top_k_overlap_min": 1.0,
        "spearman_mean": 1.0,
        "spearman_min": 1.0,
        "sign_agreement_mean": 1.0,
    }
    assert section["global"]["spearman"] == 1.0 and section["global"]["top_k_overlap"] == 1.0
    again = _explain(model, model, data)
    timing = ("seconds", "seconds_per_sample")
    assert {k: v for k, v in again.items() if k not in timing} == {
        k: v for k, v in section.items() if k not in timing
    }


def test_permuted_weights_give_low_agreement(tmp_path: Path) -> None:
    weight = _weights()
    model, data = _linear(tmp_path / "m.onnx", weight), _data(tmp_path / "d.npz")
    permuted = _linear(tmp_path / "p.onnx", weight[::-1].copy())
    section = _explain(model, permuted, data)
    assert section["aggregate"]["agreement"] < 0.5  # 1 for identical models; ~0.25 by chance
    assert section["aggregate"]["spearman_mean"] < 0.5 and section["global"]["spearman"] < -0.5
    worst = section["worst"][0]
    assert set(worst["top_units_before"]).isdisjoint(worst["top_units_after"])


def test_per_group_drift(tmp_path: Path) -> None:
    model = _linear(tmp_path / "m.onnx", _weights())
    groups = np.array(["a", "b"] * 20)
    data = _data(tmp_path / "d.npz", **{"group.g": groups})
    section = _explain(model, model, data, samples=15)
    summary = section["groups"]["g"]
    assert sum(g["samples"] for g in summary["groups"]) == 15
    assert {g["group"] for g in summary["groups"]} == {"a", "b"}
    assert summary["agreement_gap"] == 0.0
    assert all(r["groups"]["g"] == groups[r["index"]] for r in section["per_sample"])


def test_group_names_match_the_fairness_report(tmp_path: Path) -> None:
    """Bytes decoded, integers in numeric order (2 before 10), '' shown as (empty)."""
    model = _linear(tmp_path / "m.onnx", _weights())
    numbers = np.array([10, 2] * 20)
    labels = np.array([b"x", b""] * 20)
    data = _data(tmp_path / "d.npz", **{"group.n": numbers, "group.b": labels})
    section = _explain(model, model, data, samples=12)
    assert [g["group"] for g in section["groups"]["n"]["groups"]] == ["2", "10"]
    assert [g["group"] for g in section["groups"]["b"]["groups"]] == ["(empty)", "x"]
    for row in section["per_sample"]:
        assert row["groups"]["n"] == str(numbers[row["index"]])
        assert row["groups"]["b"] == (labels[row["index"]].decode() or "(empty)")


def test_gate_fails_with_exit_1_and_refusals_exit_2(tmp_path: Path) -> None:
    weight = _weights()
    model, data = _linear(tmp_path / "m.onnx", weight), _data(tmp_path / "d.npz")
    permuted = _linear(tmp_path / "p.onnx", weight[::-1].copy())
    report = tmp_path / "r.json"
    base = ["verify", model, permuted, "--data", data, "--latency-runs", 0, "--report", report]
    result = CliRunner().invoke(
        main, [str(a) for a in [*base, "--explain", 10, "--min-explanation-agreement", 0.8]]
    )
    assert result.exit_code == 1, result.output
    saved = json.loads(report.read_text())
    gate = saved["gates"][-1]
    assert gate["gate"] == "min_explanation_agreement" and gate["passed"] is False
    assert gate["value"] == saved["explanation"]["aggregate"]["agreement"]
    report.unlink()
    for extra in (["--min-explanation-agreement", 0.5], ["--explain", 5, "--explain-patch", 2]):
        result = CliRunner().invoke(main, [str(a) for a in [*base, *extra]])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert not report.exists()


def test_two_float_inputs_are_refused(tmp_path: Path) -> None:
    model = _save(
        tmp_path / "two.onnx",
        [
            helper.make_node("Add", ["input", "other"], ["s"]),
            helper.make_node("MatMul", ["s", "W"], ["logits"]),
        ],
        [
            helper.make_tensor_value_info("input", DOUBLE, ["N", F]),
            helper.make_tensor_value_info("other", DOUBLE, ["N", F]),
        ],
        {"W": _weights()},
    )
    x = np.zeros((4, F))
    np.savez(tmp_path / "d.npz", input=x, other=x)
    with pytest.raises(InputError, match="one float input or one token-id input"):
        _run(model, tmp_path / "d.npz", [0])


def test_compress_explains_a_dynamic_int8_model_one_row_at_a_time(tmp_path: Path) -> None:
    model, data = FIXTURE_MODELS["adult_mlp"]
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    result = CliRunner().invoke(
        main,
        [
            str(a)
            for a in [
                "compress", model, "-o", tmp_path / "m.onnx", "--structured", "--reconstruct",
                "--quantize", "int8", "--calibration", FIXTURES / "adult_mlp-calibration.npz",
                "--data", data, "--latency-runs", 0, "--explain", 8,
                "--min-explanation-agreement", 0.0, "--report", report, "--html", page,
            ]
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Explanation drift: occlusion of 92 features" in result.output
    section = json.loads(report.read_text())["explanation"]
    assert section["batched"] == {"baseline": True, "candidate": False}
    assert section["samples"] == 8 and set(section["groups"]) == {"race", "sex"}
    text = page.read_text(encoding="utf-8")
    for figure in ("explain-samples", "explain-global", "explain-groups-sex"):
        assert f'id="fig-{figure}"' in text


def test_image_explanations_draw_heat_maps(tmp_path: Path) -> None:
    from onnxprune.html import render_html
    from onnxprune.report import build_report

    model, data = FIXTURE_MODELS["digits_cnn"]
    section = _explain(model, model, data, samples=2)
    assert section["unit"] == "patch" and section["grid"] == [8, 8] and section["units"] == 64
    page = render_html({**build_report("verify", model), "explanation": section})
    assert 'id="fig-explain-global"' in page
    assert "Mean |attribution| of every image patch" in page


def test_integer_class_id_outputs_are_refused(tmp_path: Path) -> None:
    model = _save(
        tmp_path / "ids.onnx",
        [
            helper.make_node("Gemm", ["input", "W"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["logits"], axis=1, keepdims=1),
        ],
        [helper.make_tensor_value_info("input", DOUBLE, ["N", F])],
        {"W": _weights()},
        out=TensorProto.INT64,
    )
    data = _data(tmp_path / "d.npz")
    result = CliRunner().invoke(
        main, [str(a) for a in ["verify", model, model, "--data", data, "--explain", 3]]
    )
    assert result.exit_code == 2 and "needs a float score output" in result.output
