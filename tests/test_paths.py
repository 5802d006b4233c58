"""Unit tests of the path checks, staged outputs, strict JSON and untrusted-file readers."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import FIXTURES

from onnxprune.errors import InputError
from onnxprune.model_io import check_distinct_output
from onnxprune.npz import MAX_NPZ_BYTES, MIN_ALLOWANCE, npz_allowance, read_npz
from onnxprune.paths import (
    StagedOutputs,
    check_writes,
    model_reads,
    model_writes,
    os_error_message,
    unstage_text,
    unstaged,
)
from onnxprune.proto_check import check_proto, tensor_data_error
from onnxprune.report import to_json, write_json

DYNAMO = FIXTURES / "digits_cnn_dynamo" / "model.onnx"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "in.onnx").write_bytes(b"model")
    (tmp_path / "sub").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("same", "would overwrite the input file"),
        ("symlink", "would overwrite the input file"),
        ("hardlink", "would overwrite the input file"),
        ("dotdot", "would overwrite the input file"),
    ],
)
def test_an_output_that_is_an_input_is_refused(folder: Path, alias: str, message: str) -> None:
    source = folder / "in.onnx"
    target = {"same": source, "dotdot": folder / "sub" / ".." / "in.onnx"}.get(alias)
    if target is None:
        target = folder / "alias.onnx"
        target.symlink_to(source) if alias == "symlink" else os.link(source, target)
    with pytest.raises(InputError, match=message):
        check_writes([source], [target])


def test_distinct_outputs_pass(folder: Path) -> None:
    check_writes([folder / "in.onnx", None], [folder / "out.onnx", folder / "sub" / "r.json"])


@pytest.mark.parametrize(
    ("writes", "message"),
    [
        (["a.json", "a.json"], "the same file is given for two outputs"),
        (["absent/a.json"], "output folder .* does not exist"),
        (["sub"], "is a folder"),
        (["n" * 300], "file name too long"),
    ],
)
def test_unusable_destinations_are_refused(folder: Path, writes: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_writes([], [folder / w for w in writes])


def test_model_reads_and_writes_include_external_data(tmp_path: Path) -> None:
    assert model_reads(DYNAMO) == [DYNAMO, DYNAMO.parent / "model.onnx.data"]
    (tmp_path / "text.onnx").write_text("not a model")
    assert model_reads(tmp_path / "text.onnx") == [tmp_path / "text.onnx"]
    assert model_writes(tmp_path / "o.onnx")[1] == tmp_path / "o.onnx.data"
    with pytest.raises(InputError, match=r"model\.onnx\.data: output would overwrite"):
        check_writes(model_reads(DYNAMO), model_writes(DYNAMO.parent / "model.onnx.data")[:1])


def test_check_distinct_output_sees_hard_links(folder: Path) -> None:
    os.link(folder / "in.onnx", folder / "linked.onnx")
    with pytest.raises(InputError, match="overwrite the input model"):
        check_distinct_output(folder / "linked.onnx", [folder / "in.onnx"], external_data=False)


def test_staged_outputs_appear_only_on_commit(folder: Path) -> None:
    (folder / "out.onnx").write_text("previous")
    staged = StagedOutputs([folder / "out.onnx", folder / "sub" / "r.json"])
    model, report = staged(folder / "out.onnx"), staged(folder / "sub" / "r.json")
    assert model.parent.parent == folder and model.parent.name.startswith(".onnxprune-stage-")
    model.write_text("new model")
    report.write_text("{}")
    assert (folder / "out.onnx").read_text() == "previous"
    assert not (folder / "sub" / "r.json").exists()
    assert staged.commit() == [folder / "out.onnx", folder / "sub" / "r.json"]
    assert (folder / "out.onnx").read_text() == "new model"
    assert sorted(p.name for p in folder.iterdir()) == ["in.onnx", "out.onnx", "sub"]


def test_discarded_outputs_leave_nothing(folder: Path) -> None:
    staged = StagedOutputs([folder / "out.onnx"])
    staged(folder / "out.onnx").write_text("half written")
    staged.discard()
    assert sorted(p.name for p in folder.iterdir()) == ["in.onnx", "sub"]


def test_an_unwritable_folder_is_an_input_error(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("onnxprune.paths.tempfile.mkdtemp", refuse)
    with pytest.raises(InputError, match=r"out.onnx: cannot write in .* \(Permission denied\)"):
        StagedOutputs([folder / "out.onnx"])


def test_staged_paths_read_as_their_destinations() -> None:
    text = "dir/.onnxprune-stage-ab_1/out.onnx: bad; '.onnxprune-stage-x9/r.json'"
    assert unstage_text(text) == "dir/out.onnx: bad; 'r.json'"
    assert unstaged({"output": ".onnxprune-stage-q/o.onnx", "n": [1.5]}) == {
        "output": "o.onnx",
        "n": [1.5],
    }
    assert unstage_text("x.onnxprune-stage-a/b") == "x.onnxprune-stage-a/b"
    error = OSError(28, "No space left on device", "d/.onnxprune-stage-z/out.onnx")
    assert os_error_message(error) == "d/out.onnx: No space left on device"


def test_reports_encode_non_finite_numbers_as_null(tmp_path: Path) -> None:
    report = {"quality": {"cosine": float("nan"), "diff": [1.0, float("inf")]}, "ok": 2.0}
    text = to_json(report)
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert parsed["quality"] == {"cosine": None, "diff": [1.0, None]}
    assert parsed["non_finite"] == ["quality.cosine", "quality.diff[1]"]
    assert "non_finite" not in json.loads(to_json({"ok": 1.0}))
    with pytest.raises(InputError, match=r"absent/r.json: No such file or directory"):
        write_json(tmp_path / "absent" / "r.json", report)


def test_npz_allowance_scales_with_the_file_and_is_capped() -> None:
    assert npz_allowance(1000) == MIN_ALLOWANCE
    assert npz_allowance(10 << 20) == 200 * (10 << 20)
    assert npz_allowance(1 << 40) == MAX_NPZ_BYTES


def test_npz_header_is_checked_before_loading(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, input=np.ones((3, 2), np.float32), label=np.array([0, 1, 0]))
    assert read_npz(good)["input"].shape == (3, 2)
    crafted = tmp_path / "crafted.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 40, 2)}
    with zipfile.ZipFile(crafted, "w") as archive, archive.open("input.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, header)
        member.write(bytes(16))
    with pytest.raises(InputError, match=r"declares shape \(1099511627776, 2\) of float32"):
        read_npz(crafted)


def _model() -> onnx.ModelProto:
    return onnx.load(FIXTURES / "adult_mlp.onnx")


def test_tensor_data_must_fit_shape_and_type() -> None:
    tensor = _model().graph.initializer[0]
    assert tensor_data_error(tensor) is None
    tensor.raw_data = tensor.raw_data[:-4]
    assert "holds 23548 bytes, its shape and type need 23552" in tensor_data_error(tensor)
    tensor.data_type = 999
    assert "unknown data type 999" in tensor_data_error(tensor)


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    data = bytearray(_model().SerializeToString())
    at = bytes(data).index(b"Relu")
    data[at] = 0xC3  # a lead byte followed by ASCII: not UTF-8
    path.write_bytes(bytes(data))
    proto = onnx.load(path)
    with pytest.raises(InputError, match="not valid UTF-8"):
        check_proto(proto, path)


def test_untyped_graph_input_is_refused(tmp_path: Path) -> None:
    proto = _model()
    proto.graph.input[0].type.tensor_type.elem_type = 0
    with pytest.raises(InputError, match="input 'input' has no known element type"):
        check_proto(proto, tmp_path / "m.onnx")
