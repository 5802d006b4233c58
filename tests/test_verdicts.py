"""Verdicts never mislead: no PASS without a budget, a default budget for compress, metrics that
mean something for the output, every refusal reason shown, library noise kept out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxprune.reasons import grouped_reasons
from onnxprune.tasks import resolve_task
from tests.conftest import FIXTURE_MODELS, run_cli
from tests.shapes import minus_one_batch_embedding

FAST = ("--latency-runs", "0")
CNN, CNN_DATA = FIXTURE_MODELS["digits_cnn"]


def test_compress_without_gates_checks_a_default_budget(tmp_path: Path) -> None:
    out = tmp_path / "cnn.onnx"
    result = run_cli(
        "compress", CNN, "-o", out, "--target-sparsity", "0.9", "--data", CNN_DATA, *FAST
    )
    assert result.returncode == 1, result.stderr
    assert "default budget" in result.stdout and "min_agreement" in result.stdout
    assert "Result: FAIL (a gate broke) on output 'logits' (min_agreement)" in result.stdout
    report = json.loads(out.with_name("cnn.report.json").read_text())
    assert report["gates"][0] == {**report["gates"][0], "default": True, "limit": 0.95}
    loosened = run_cli(
        "compress",
        CNN,
        "-o",
        out,
        "--target-sparsity",
        "0.9",
        "--data",
        CNN_DATA,
        "--no-default-budget",
        *FAST,
    )
    assert loosened.returncode == 0 and "Result: no gates set" in loosened.stdout


def test_embedding_budget_is_cosine_and_agreement_is_refused(tmp_path: Path) -> None:
    model = minus_one_batch_embedding(tmp_path / "emb.onnx")
    out = tmp_path / "out.onnx"
    result = run_cli(
        "compress", model, "-o", out, "--target-sparsity", "0.9", "--min-fan-in", "0", *FAST
    )
    assert result.returncode == 1, result.stderr
    assert "min_cosine" in result.stdout and "top-1" not in result.stdout
    refused = run_cli("compress", model, "-o", tmp_path / "r.onnx", "--min-agreement", "0.9", *FAST)
    assert refused.returncode == 2
    assert "--min-agreement (top-1 agreement) needs a classifier output" in refused.stderr
    assert not (tmp_path / "r.onnx").exists()


def test_verify_without_gates_says_nothing_was_checked() -> None:
    result = run_cli("verify", CNN, CNN, "--data", CNN_DATA, *FAST)
    assert result.returncode == 0
    assert "Result: no gates set (nothing was checked against a budget)" in result.stdout
    assert "PASS" not in result.stdout


def test_a_value_at_the_limit_passes() -> None:
    result = run_cli(
        "verify",
        CNN,
        CNN,
        "--data",
        CNN_DATA,
        "--min-agreement",
        "1.0",
        "--min-cosine",
        "1.0",
        *FAST,
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("name", "labels", "task"),
    [
        ("logits", False, "classification"),
        ("sentence_embedding", False, "embedding"),
        ("output", True, "classification"),
        ("boxes", False, "detection"),
        ("output", False, None),
    ],
)
def test_task_inference(name: str, labels: bool, task: str | None) -> None:
    import numpy as np

    output = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    assert resolve_task(None, name, output, labels).name == task


def test_nothing_to_prune_prints_every_reason_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = run_cli(
        "prune", CNN, "-o", tmp_path / "o.onnx", "--include", "no-such-layer", "--report", report
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not matched by --include 'no-such-layer'" in result.stdout
    written = json.loads(report.read_text())
    assert written["passed"] is False and written["pruning"]["skipped"]
    assert not (tmp_path / "o.onnx").exists()


def test_structured_include_regex_is_validated(tmp_path: Path) -> None:
    result = run_cli("prune", CNN, "-o", tmp_path / "o.onnx", "--structured", "--include", "(")
    assert result.returncode == 2 and "--include '(' is not a valid regex" in result.stderr


def test_grouped_reasons_keep_full_examples() -> None:
    lines = grouped_reasons(["channels of 'a' feed Concat", "channels of 'b' feed Concat", "bias"])
    assert lines == ["2x channels of '…' feed Concat (e.g. channels of 'a' feed Concat)", "1x bias"]


def test_library_logs_are_owned(tmp_path: Path) -> None:
    calibration = CNN.with_name("digits_cnn-calibration.npz")
    result = run_cli(
        "quantize",
        CNN,
        "-o",
        tmp_path / "q.onnx",
        "--mode",
        "static",
        "--calibration",
        calibration,
        "--data",
        CNN_DATA,
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    assert "pre-processing" not in result.stderr and "root" not in result.stderr
    debug = run_cli("inspect", CNN, "--debug")
    assert debug.returncode == 0
    assert all(line.startswith("onnxprune: ") for line in debug.stderr.splitlines())


@pytest.mark.parametrize(
    ("runs", "ratios", "conclusive"),
    [
        (50, [1.3, 1.4, 1.5, 1.6], True),
        (50, [0.9, 1.0, 1.1, 1.2], False),
        (50, [1.0, 1.02, 1.3, 1.5], False),
        (5, [1.5, 1.6, 1.7, 1.8], False),
    ],
)
def test_speedup_is_called_only_beyond_noise(runs: int, ratios: list, conclusive: bool) -> None:
    import numpy as np

    from onnxprune.latency import _spread, _verdict

    low, high = _spread(np.asarray(ratios))["speedup_iqr"]
    assert _verdict(runs, low, high, float(np.median(ratios)))[0] is conclusive


def test_unstructured_pruning_says_it_buys_no_speed(tmp_path: Path) -> None:
    result = run_cli("prune", CNN, "-o", tmp_path / "o.onnx")
    assert result.returncode == 0
    assert "do not make onnxruntime's CPU kernels faster" in result.stdout


def test_non_finite_calibration_is_refused(tmp_path: Path) -> None:
    import numpy as np

    calibration = tmp_path / "nan.npz"
    data = dict(np.load(CNN.with_name("digits_cnn-calibration.npz")))
    data["input"] = data["input"].copy()
    data["input"][0, 0, 0, 0] = np.nan
    np.savez(calibration, **data)
    result = run_cli(
        "prune",
        CNN,
        "-o",
        tmp_path / "o.onnx",
        "--method",
        "sparsegpt",
        "--calibration",
        calibration,
    )
    assert result.returncode == 2 and "NaN or infinite" in result.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_non_finite_candidate_outputs_fail_the_verdict(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(CNN)
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    broken = numpy_helper.to_array(weight).copy()
    broken[0] = np.nan
    weight.CopyFrom(numpy_helper.from_array(broken, weight.name))
    candidate = tmp_path / "nan.onnx"
    onnx.save(model, candidate)
    report = tmp_path / "r.json"
    result = run_cli(
        "verify",
        CNN,
        candidate,
        "--data",
        CNN_DATA,
        "--report",
        report,
        "--html",
        tmp_path / "r.html",
        *FAST,
    )
    assert result.returncode == 1, result.stderr
    assert "finite_outputs     FAIL" in result.stdout
    written = json.loads(report.read_text())
    assert written["verification"]["finite_outputs"] == {"baseline": True, "candidate": False}
    assert "verification.quality.cosine_mean" in written["non_finite"]
