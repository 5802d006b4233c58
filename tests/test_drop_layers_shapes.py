"""drop-layers on the pre-norm layout other exporters write, and when local scores tie."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tests.conftest import run_cli
from tests.shapes import pre_norm_stack


def _data(path: Path) -> Path:
    x = np.random.default_rng(3).standard_normal((32, 16)).astype(np.float32) * 10
    np.savez(path, x=x)
    return path


def test_dropping_consecutive_pre_norm_blocks(tmp_path: Path) -> None:
    model, out = pre_norm_stack(tmp_path / "m.onnx"), tmp_path / "o.onnx"
    result = run_cli(
        "drop-layers",
        model,
        "-o",
        out,
        "--blocks",
        "2",
        "--calibration",
        _data(tmp_path / "c.npz"),
        "--latency-runs",
        "0",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["drop_layers"]["dropped"]) == 2
    x = np.ones((2, 16), np.float32)
    (y,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert y.shape == (2, 16)


def test_tied_local_scores_rank_by_the_model_output(tmp_path: Path) -> None:
    model = pre_norm_stack(tmp_path / "m.onnx", scales=(3e-3, 1e-3, 1e-2))
    result = run_cli(
        "drop-layers",
        model,
        "-o",
        tmp_path / "o.onnx",
        "--blocks",
        "1",
        "--calibration",
        _data(tmp_path / "c.npz"),
        "--latency-runs",
        "0",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    section = json.loads(result.stdout)["drop_layers"]
    assert section["ranked_by"].startswith("model output")
    assert section["dropped"] == ["add1"]
