"""Loading and saving: bad files are refused in one line, outputs are atomic and deterministic."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import onnx
import pytest
from conftest import FIXTURE_MODELS

from onnxprune import InputError
from onnxprune.errors import first_line
from onnxprune.model_io import external_data_files, load_model, save_model, uses_external_data

DYNAMO = FIXTURE_MODELS["digits_cnn_dynamo"][0]
CNN = FIXTURE_MODELS["digits_cnn"][0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_external_data_is_found_and_kept(tmp_path: Path) -> None:
    model = load_model(DYNAMO)
    assert uses_external_data(model)
    assert external_data_files(model) == [DYNAMO.with_name("model.onnx.data")]
    written = save_model(model, tmp_path / "out.onnx", protected=[DYNAMO], external_data=True)
    assert written == [tmp_path / "out.onnx", tmp_path / "out.onnx.data"]
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)
    assert uses_external_data(load_model(tmp_path / "out.onnx"))


def test_save_is_deterministic(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        save_model(load_model(DYNAMO), tmp_path / folder / "m.onnx", external_data=True)
    for name in ("m.onnx", "m.onnx.data"):
        assert _digest(tmp_path / "a" / name) == _digest(tmp_path / "b" / name)


def test_save_refuses_to_overwrite_input(tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    shutil.copy(CNN, copy)
    before = _digest(copy)
    with pytest.raises(InputError, match="overwrite the input"):
        save_model(load_model(copy), copy, protected=[copy])
    assert _digest(copy) == before


def test_save_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    model = load_model(CNN)
    model.graph.node(0).op_type = "NoSuchOp"
    with pytest.raises(InputError, match=r"fails the ONNX checker|does not load in onnxruntime"):
        save_model(model, tmp_path / "broken.onnx")
    assert list(tmp_path.iterdir()) == []


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(CNN.read_bytes()[: CNN.stat().st_size // 2])
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    return path


def _missing_data(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    shutil.copy(DYNAMO, path)
    return path


def _short_data(tmp_path: Path) -> Path:
    path = _missing_data(tmp_path)
    data = DYNAMO.with_name("model.onnx.data").read_bytes()
    (tmp_path / "model.onnx.data").write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_truncated, "not a valid ONNX model"),
        (_text_file, "not a valid ONNX model"),
        (_missing_data, "external data file 'model.onnx.data' of tensor '.*' is missing"),
        (_short_data, "external data file 'model.onnx.data' is truncated"),
        (lambda tmp: tmp / "absent.onnx", "no such model file"),
    ],
    ids=["truncated", "text", "missing_external_data", "short_external_data", "absent"],
)
def test_bad_models_are_refused(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_model(make(tmp_path))


@pytest.mark.parametrize(
    ("error", "empty", "expected"),
    [
        (ValueError("bad shape\n  at node 3"), None, "bad shape"),
        (ValueError("  \n second line first\n"), None, "second line first"),
        (RuntimeError(), None, "RuntimeError"),
        (RuntimeError(""), "", ""),
    ],
)
def test_first_line_of_an_error(error: BaseException, empty: str | None, expected: str) -> None:
    assert first_line(error, empty) == expected
