"""Group reports and gates from the command line; labels checked; the evaluation batch size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from onnxprune import VerifyOptions, verify_files
from tests.conftest import FIXTURE_MODELS, REPO, run_cli

ADULT, ADULT_DATA = FIXTURE_MODELS["adult_mlp"]
FAST = ("--latency-runs", "0")


def test_labels_outside_the_model_classes_are_refused(tmp_path: Path) -> None:
    data = dict(np.load(ADULT_DATA))
    data["label"] = data["label"] + 1  # coded {1, 2} for a 2-class output
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, **data)
    report = tmp_path / "r.json"
    result = run_cli("verify", ADULT, ADULT, "--data", shifted, "--report", report, *FAST)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "'label' holds 2, but labels must be class indices 0..1" in result.stderr
    assert not report.exists()


def test_compress_reports_intersections_small_groups_and_the_group_that_broke_the_gate(
    tmp_path: Path,
) -> None:
    out, report, page = tmp_path / "a.onnx", tmp_path / "a.json", tmp_path / "a.html"
    command = [sys.executable, "-m", "cli.main", "compress", ADULT, "-o", out, "--data",
               ADULT_DATA, "--target-sparsity", "0.9", "--group-cross", "race,sex",
               "--max-group-drop", "0.02", "--report", report, "--html", page, *FAST]
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, cwd=REPO, check=False,
        preexec_fn=lambda: os.umask(0o027),
    )
    assert result.returncode == 1, result.stderr
    assert "max_group_drop      0.8214 <= 0.02: FAIL (race&sex: Black & Female)" in result.stdout
    assert "fewer than 30 samples are shown but left out" in result.stdout
    assert "Other & Female (n=8)" in result.stdout
    written = json.loads(report.read_text())
    quality = written["verification"]["quality"]
    crossed = quality["groups"]["race&sex"]
    assert crossed["small_groups"] == [
        "Amer-Indian-Eskimo & Female", "Amer-Indian-Eskimo & Male", "Other & Female",
        "Other & Male",
    ]
    assert written["gates"][0]["group"] == "Black & Female"
    assert written["verification"]["batch_size"] == {"quality": 64, "reason": "default"}
    assert "hatched groups have fewer than 30 samples (left out of" in page.read_text()
    assert {s["batch_size"] for s in written["stages"]} == {64}
    modes = {os.stat(p).st_mode & 0o777 for p in (out, report, page)}
    assert modes == {0o640}


def test_dynamically_quantized_candidates_are_evaluated_one_sample_at_a_time(
    tmp_path: Path,
) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantized = tmp_path / "q.onnx"
    quantize_dynamic(ADULT, quantized)
    options = VerifyOptions(data=ADULT_DATA, latency_runs=0)
    report = verify_files(ADULT, quantized, options)
    record = report["verification"]["batch_size"]
    assert record["quality"] == 1
    assert "dynamically quantized candidate (DynamicQuantizeLinear, MatMulInteger)" in record[
        "reason"
    ]
    given = verify_files(ADULT, quantized, VerifyOptions(data=ADULT_DATA, latency_runs=0,
                                                         batch_size=256))
    assert given["verification"]["batch_size"]["quality"] == 256


def test_min_group_positives_leaves_thin_rates_out_of_equalized_odds(tmp_path: Path) -> None:
    def crossed(*extra: object) -> tuple[dict, str]:
        report = tmp_path / "r.json"
        result = run_cli(
            "verify", ADULT, ADULT, "--data", ADULT_DATA, "--group-cross", "race,sex",
            "--report", report, *FAST, *extra,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(report.read_text())["verification"]["quality"]["groups"], result.stdout

    default, text = crossed()
    race_sex = default["race&sex"]
    assert race_sex["min_group_positives"] == 10
    assert any(r.startswith("Asian-Pac-Islander & Female: TPR") for r in race_sex["rates_left_out"])
    assert "left out of the equalized-odds difference and its gate" in text
    every, _ = crossed("--min-group-positives", "1")
    assert every["race&sex"]["rates_left_out"] == []
    assert (
        every["race&sex"]["equalized_odds_difference_before"]
        > race_sex["equalized_odds_difference_before"]
    )
    refused = run_cli("verify", ADULT, ADULT, "--data", ADULT_DATA, "--min-group-positives", "0")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
