"""Verification end to end in onnxruntime on the fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURE_MODELS

from onnxprune import Gates, InputError, PruneOptions, VerifyOptions, prune_file, verify_files
from onnxprune.verify import evaluate_gates

FAST = {"latency_runs": 0}


def test_model_against_itself_is_identical() -> None:
    model, data = FIXTURE_MODELS["digits_cnn"]
    report = verify_files(model, model, VerifyOptions(data=data, **FAST))
    quality = report["verification"]["quality"]
    assert quality["top1_agreement"] == 1.0
    assert quality["cosine_min"] == pytest.approx(1.0)
    assert quality["max_abs_diff"] == 0.0
    assert quality["accuracy_drop"] == 0.0
    assert quality["accuracy_before"] > 0.97


def test_pruned_adult_model_reports_groups_and_gates(tmp_path: Path) -> None:
    model, data = FIXTURE_MODELS["adult_mlp"]
    out = tmp_path / "adult.onnx"
    prune_file(model, out, PruneOptions(0.9))
    gates = Gates(max_accuracy_drop=0.0, max_group_drop=1.0, min_agreement=0.5, min_cosine=0.1)
    report = verify_files(model, out, VerifyOptions(data=data, **FAST), gates)
    groups = report["verification"]["quality"]["groups"]
    assert sorted(groups) == ["race", "sex"]
    assert [g["group"] for g in groups["sex"]["groups"]] == ["Female", "Male"]
    assert sum(g["samples"] for g in groups["race"]["groups"]) == 4000
    results = {g["gate"]: g["passed"] for g in report["gates"]}
    assert results["max_group_drop"] is True
    accuracy_drop = report["verification"]["quality"]["accuracy_drop"]
    assert results["max_accuracy_drop"] is (accuracy_drop <= 0.0)
    assert report["passed"] is all(results.values())


def test_synthetic_inputs_when_no_data(tmp_path: Path) -> None:
    model, _ = FIXTURE_MODELS["digits_transformer"]
    report = verify_files(model, model, VerifyOptions(**FAST))
    data = report["verification"]["data"]
    assert data["synthetic"] and data["samples"] == 32 and not data["labels"]
    assert "accuracy_before" not in report["verification"]["quality"]


def test_latency_is_interleaved_and_recorded() -> None:
    model, data = FIXTURE_MODELS["digits_mlp"]
    report = verify_files(model, model, VerifyOptions(data=data, latency_runs=6, latency_warmup=1))
    latency = report["verification"]["latency"]
    assert latency["runs"] == 6 and latency["batch"] == 1
    assert latency["baseline"]["p50_ms"] > 0 and latency["candidate"]["p50_ms"] > 0
    assert latency["speedup"] == pytest.approx(
        latency["baseline"]["p50_ms"] / latency["candidate"]["p50_ms"]
    )


def test_gates_that_cannot_be_evaluated_are_refused() -> None:
    model, _ = FIXTURE_MODELS["digits_mlp"]
    with pytest.raises(InputError, match="needs a 'label' array"):
        verify_files(model, model, VerifyOptions(**FAST), Gates(max_accuracy_drop=0.01))
    with pytest.raises(InputError, match="group"):
        verify_files(
            model,
            model,
            VerifyOptions(data=FIXTURE_MODELS["digits_mlp"][1], **FAST),
            Gates(max_group_drop=0.01),
        )


def test_models_with_different_signatures_are_refused() -> None:
    with pytest.raises(InputError, match="differ from the baseline"):
        verify_files(
            FIXTURE_MODELS["digits_mlp"][0], FIXTURE_MODELS["digits_cnn"][0], VerifyOptions(**FAST)
        )


def test_gate_evaluation() -> None:
    verification = {
        "quality": {
            "accuracy_drop": 0.02,
            "top1_agreement": 0.9,
            "cosine_mean": 0.99,
            "groups": {"sex": {"worst_group_drop": 0.05}},
        }
    }
    gates = Gates(max_accuracy_drop=0.01, max_group_drop=0.1, min_agreement=0.95, min_cosine=0.98)
    verdicts = {g["gate"]: g["passed"] for g in evaluate_gates(gates, verification)}
    assert verdicts == {
        "max_accuracy_drop": False,
        "max_group_drop": True,
        "min_agreement": False,
        "min_cosine": True,
    }
