"""Shared test helpers: fixture paths, golden files and small hand-built models."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
GOLDEN = FIXTURES / "golden"

# name -> (model, eval data)
FIXTURE_MODELS = {
    "digits_mlp": (FIXTURES / "digits_mlp.onnx", FIXTURES / "digits_mlp-eval.npz"),
    "digits_cnn": (FIXTURES / "digits_cnn.onnx", FIXTURES / "digits_cnn-eval.npz"),
    "digits_cnn_dynamo": (
        FIXTURES / "digits_cnn_dynamo" / "model.onnx",
        FIXTURES / "digits_cnn_dynamo" / "eval.npz",
    ),
    "digits_transformer": (
        FIXTURES / "digits_transformer.onnx",
        FIXTURES / "digits_transformer-eval.npz",
    ),
    "adult_mlp": (FIXTURES / "adult_mlp.onnx", FIXTURES / "adult_mlp-eval.npz"),
    "digits_mobile": (FIXTURES / "digits_mobile.onnx", FIXTURES / "digits_mobile-eval.npz"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="Rewrite fixtures/golden/ from current outputs (review the diff before committing).",
    )


def _rounded(value):
    """Floats to 6 significant digits, so goldens do not depend on the last ulp."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """``golden(name, data)`` compares ``data`` with ``fixtures/golden/<name>.json``."""
    update = request.config.getoption("--update-golden")

    def check(name: str, data: dict) -> None:
        path = GOLDEN / f"{name}.json"
        data = _rounded(json.loads(json.dumps(data)))
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            return
        assert path.exists(), f"missing golden {path}; run pytest --update-golden and review"
        assert data == json.loads(path.read_text()), f"{name} drifted from {path}"

    return check


def run_cli(*args: object) -> subprocess.CompletedProcess:
    """``onnxprune ARGS`` in a subprocess from the repository root, output captured."""
    command = [sys.executable, "-m", "cli.main", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)


def parse_model(text: str, path: Path | None = None) -> onnx.ModelProto:
    """A model from ONNX text syntax, checked; saved to ``path`` when given."""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, path)
    return model


# The fault campaign (tests/test_faults*.py): inputs copied fresh for every case.
@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fault_helpers import build_workspace

    return build_workspace(tmp_path_factory.mktemp("base"))


@pytest.fixture
def workspace(base_workspace: Path, tmp_path: Path) -> Path:
    """A fresh copy of the inputs (see ``fault_helpers.build_workspace``) for one case."""
    shutil.copytree(base_workspace, tmp_path / "w")
    return tmp_path / "w"
