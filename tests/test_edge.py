"""export-edge: the package's files, the manifest's hashes, the .ort's parity with the .onnx."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import FIXTURE_MODELS
from test_html import _check_every_value, _check_figures

import onnxprune.edge
from cli.main import main
from onnxprune.ort_format import OrtOptions, convert_to_ort

MLP, MLP_DATA = FIXTURE_MODELS["digits_mlp"]
DYNAMO, DYNAMO_DATA = FIXTURE_MODELS["digits_cnn_dynamo"]
FAST = ["--latency-runs", "0"]


def _invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _outputs(path: Path, data: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: np.load(data)[i.name] for i in session.get_inputs()}
    return session.run(None, feed)[0]


def _check_manifest(folder: Path, expected: list[str]) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == expected
    assert sorted(p.name for p in folder.iterdir()) == sorted([*expected, "manifest.json"])
    for entry in manifest["files"]:
        content = (folder / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(content).hexdigest(), entry["name"]
        assert entry["bytes"] == len(content)
    assert manifest["versions"]["onnxruntime"] == ort.__version__
    return manifest


def test_package_files_hashes_and_parity(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    result = _invoke("export-edge", MLP, "-o", folder, "--data", MLP_DATA, *FAST)
    assert result.exit_code == 0, result.output
    names = ["model.onnx", "model.ort", "required_operators.config", "report.json", "report.html"]
    manifest = _check_manifest(folder, names)
    assert manifest["input_model"]["sha256"] == hashlib.sha256(MLP.read_bytes()).hexdigest()
    assert manifest["options"]["nchwc_layout"] is False
    # the .ort loads on its own and agrees with the .onnx
    np.testing.assert_allclose(
        _outputs(folder / "model.ort", MLP_DATA),
        _outputs(folder / "model.onnx", MLP_DATA),
        rtol=1e-3,
        atol=1e-4,
    )
    config = (folder / "required_operators.config").read_text().splitlines()
    assert config[:2] == ["# Generated from model/s:", "# - model.ort"]
    assert any(line.startswith("ai.onnx;") for line in config)
    report = json.loads((folder / "report.json").read_text())
    assert report["output"] == str(folder) and report["passed"] is True
    assert report["gates"][-1]["gate"] == "max_ort_parity_violations"
    sizes = {f["name"]: f["bytes"] for f in report["edge"]["files"]}
    assert sizes["model.ort"] == (folder / "model.ort").stat().st_size
    assert "Edge package" in result.output and "model.ort" in result.output
    page = _check_every_value(report, (folder / "report.html").read_text(encoding="utf-8"))
    _check_figures(report, page, {"fig-package"})  # no --baseline: nothing else to draw


def test_external_data_is_packaged_and_verified_against_a_baseline(tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    result = _invoke(
        "export-edge", DYNAMO, "-o", folder, "--data", DYNAMO_DATA, *FAST,
        "--baseline", DYNAMO, "--max-accuracy-drop", 0.0, "--platform", "arm", "--no-html",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = ["model.onnx", "model.onnx.data", "model.ort", "required_operators.config"]
    _check_manifest(folder, [*names, "report.json"])
    report = json.loads((folder / "report.json").read_text())
    assert report["verification"]["quality"]["accuracy_drop"] == 0.0
    assert report["edge"]["qdq_int8_allowed"] is True and report["edge"]["platform"] == "arm"
    assert [g["gate"] for g in report["gates"]] == [
        "max_accuracy_drop",
        "max_ort_parity_violations",
    ]


def test_parity_failure_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An .ort that computes something else (here: a model with other weights) fails parity."""
    other = onnx.load(str(MLP))
    weight = other.graph.initializer[0]
    values = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    wrong = tmp_path / "wrong.onnx"
    onnx.save(other, wrong)
    monkeypatch.setattr(
        onnxprune.edge,
        "convert_to_ort",
        lambda _m, out, options: convert_to_ort(wrong, out, options),
    )
    folder = tmp_path / "pkg"
    result = _invoke("export-edge", MLP, "-o", folder, "--data", MLP_DATA, *FAST, "--no-html")
    assert result.exit_code == 1, result.output
    report = json.loads((folder / "report.json").read_text())
    gate = report["gates"][-1]
    assert gate["gate"] == "max_ort_parity_violations" and gate["passed"] is False
    assert gate["value"] == report["edge"]["parity"]["outputs"]["logits"]["violations"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--nchwc", "--platform", "arm"], "amd64 only"),
        (["--max-accuracy-drop", "0.01"], "give --baseline"),
        (["--parity-atol", "-1"], "must be >= 0"),
    ],
    ids=["nchwc_on_arm", "gate_without_baseline", "negative_tolerance"],
)
def test_refusals_exit_2_and_write_nothing(tmp_path: Path, extra: list[str], message: str) -> None:
    folder = tmp_path / "pkg"
    result = _invoke("export-edge", MLP, "-o", folder, "--data", MLP_DATA, *FAST, *extra)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not folder.exists()


def test_missing_parent_folder_exits_2(tmp_path: Path) -> None:
    result = _invoke("export-edge", MLP, "-o", tmp_path / "no" / "pkg", "--data", MLP_DATA)
    assert result.exit_code == 2 and not (tmp_path / "no").exists()


def test_nchwc_is_off_unless_asked(tmp_path: Path) -> None:
    """Off (the default), no NCHWc node is baked in; on, an AVX2 machine bakes them in."""
    from onnxprune.ort_format import write_operator_config

    model = FIXTURE_MODELS["digits_cnn"][0]
    domains = {}
    for nchwc in (False, True):
        convert_to_ort(model, tmp_path / f"{nchwc}.ort", OrtOptions(nchwc=nchwc))
        operators = write_operator_config(tmp_path / f"{nchwc}.ort", tmp_path / f"{nchwc}.config")
        domains[nchwc] = {key.split()[0] for key in operators}
    assert "com.microsoft.nchwc" not in domains[False]
    cpu = Path("/proc/cpuinfo")
    if cpu.exists() and " avx2" in cpu.read_text():
        assert "com.microsoft.nchwc" in domains[True]
