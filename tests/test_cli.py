"""The command line, through click's runner and as a real subprocess."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURE_MODELS, run_cli

from cli.main import main

CNN, CNN_DATA = FIXTURE_MODELS["digits_cnn"]
DYNAMO, DYNAMO_DATA = FIXTURE_MODELS["digits_cnn_dynamo"]
FAST = ["--latency-runs", "0"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("inspect", "prune", "verify", "compress"):
        assert command in result.output


def test_inspect_json() -> None:
    result = CliRunner().invoke(main, ["inspect", str(DYNAMO), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["external_data"] is True
    assert summary["parameters"]["prunable_elements"] == 23504


def test_prune_then_verify_with_failing_gate(tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    result = CliRunner().invoke(
        main, ["prune", str(CNN), "-o", str(out), "--target-sparsity", "0.9", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pruning"]["totals"]["sparsity_after"] == pytest.approx(
        0.9, abs=0.005
    )
    report = tmp_path / "r.json"
    result = CliRunner().invoke(
        main,
        [
            "verify",
            str(CNN),
            str(out),
            "--data",
            str(CNN_DATA),
            *FAST,
            "--min-agreement",
            "0.9999",
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 1, result.output
    saved = json.loads(report.read_text())
    assert saved["passed"] is False
    assert saved["gates"][0]["gate"] == "min_agreement"
    assert "FAIL" in result.output


def test_compress_defaults_write_beside_the_input(tmp_path: Path) -> None:
    model = tmp_path / "cnn.onnx"
    shutil.copy(CNN, model)
    result = run_cli(
        "compress",
        model,
        "--target-sparsity",
        "0.5",
        "--data",
        CNN_DATA,
        "--no-default-budget",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "cnn.compressed.report.json").read_text())
    assert report["output"] == str(tmp_path / "cnn.compressed.onnx")
    assert report["pruning"]["totals"]["sparsity_after"] == pytest.approx(0.5, abs=0.005)
    assert report["verification"]["quality"]["accuracy_before"] > 0.97
    assert "accuracy" in result.stdout


def test_compress_dynamo_model_keeps_external_data(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = run_cli(
        "compress", DYNAMO, "-o", out, "--data", DYNAMO_DATA, "--min-agreement", "0.5", *FAST
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.onnx.data").is_file()
    assert (tmp_path / "m.report.json").is_file()


def _bad_cases(tmp: Path) -> dict[str, tuple[list, str]]:
    text = tmp / "text.onnx"
    text.write_text("not a model")
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(CNN.read_bytes()[:5000])
    lonely = tmp / "lonely" / "model.onnx"
    lonely.parent.mkdir()
    shutil.copy(DYNAMO, lonely)
    wrong = tmp / "wrong.npz"
    np.savez(wrong, input=np.zeros((3, 64), np.float32))
    copy = tmp / "copy.onnx"
    shutil.copy(CNN, copy)
    return {
        "not_onnx": (["compress", text, "-o", tmp / "o.onnx"], "not a valid ONNX model"),
        "truncated": (["compress", truncated, "-o", tmp / "o.onnx"], "not a valid ONNX model"),
        "missing_external_data": (["compress", lonely, "-o", tmp / "o.onnx"], "is missing"),
        "sparsity_out_of_range": (
            ["compress", CNN, "-o", tmp / "o.onnx", "--target-sparsity", "1.5"],
            "target sparsity must be in [0, 1)",
        ),
        "data_mismatch": (
            ["compress", CNN, "-o", tmp / "o.onnx", "--data", wrong],
            "array 'input' has shape",
        ),
        "output_is_input": (["compress", copy, "-o", copy], "overwrite the input"),
        "unknown_method": (
            ["prune", CNN, "-o", tmp / "o.onnx", "--method", "lottery"],
            "unknown method",
        ),
        "unknown_option": (["prune", CNN, "--sparsity", "0.5"], "No such option"),
        "missing_output_folder": (
            ["compress", CNN, "-o", tmp / "absent" / "o.onnx"],
            "does not exist",
        ),
    }


BAD_CASES = [
    "not_onnx",
    "truncated",
    "missing_external_data",
    "sparsity_out_of_range",
    "data_mismatch",
    "output_is_input",
    "unknown_method",
    "unknown_option",
    "missing_output_folder",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, case: str) -> None:
    args, message = _bad_cases(tmp_path)[case]
    before = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnxprune: error:"), result.stderr
    assert message in lines[0]
    after = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    result = run_cli("inspect", bad, "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_gate_failure_exits_1_and_keeps_the_model(tmp_path: Path) -> None:
    out = tmp_path / "o.onnx"
    result = run_cli(
        "compress",
        CNN,
        "-o",
        out,
        "--target-sparsity",
        "0.95",
        "--data",
        CNN_DATA,
        *FAST,
        "--max-accuracy-drop",
        "0.001",
    )
    assert result.returncode == 1, result.stderr
    assert out.is_file()
    report = json.loads((tmp_path / "o.report.json").read_text())
    assert report["gates"] == [
        {
            "gate": "max_accuracy_drop",
            "limit": 0.001,
            "value": report["verification"]["quality"]["accuracy_drop"],
            "passed": False,
        }
    ]
