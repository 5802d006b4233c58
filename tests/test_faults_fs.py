"""The fault campaign, part 4: the file system says no (see ``test_faults.py``).

Injected ENOSPC, EACCES, EROFS and EIO at each stage of writing, a real EFBIG under
RLIMIT_FSIZE, and a command that fails after its model is written: exit 2, nothing left behind,
earlier outputs at the destinations as they were.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import REPO
from fault_helpers import FAST, run_case, snapshot


def _fail_with(code: int) -> Callable[..., None]:
    def fail(*args, **kwargs) -> None:
        raise OSError(code, os.strerror(code))

    return fail


def _previous_outputs(workspace: Path) -> list[str]:
    """Earlier outputs at the destinations: a failed run must leave them as they were."""
    for name in ("out.onnx", "r.json"):
        (workspace / name).write_text(f"previous {name}")
    return ["prune", workspace / "m.onnx", "-o", workspace / "out.onnx", "--report"]


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("onnx_ir.save", 28),  # ENOSPC while writing the model
        ("onnxprune.report.tempfile.NamedTemporaryFile", 28),  # ENOSPC writing the report
        ("onnxprune.paths.tempfile.mkdtemp", 13),  # EACCES: no permission in the folder
        ("onnxprune.paths.tempfile.mkdtemp", 30),  # EROFS: read-only file system
    ],
    ids=["model_no_space", "report_no_space", "no_permission", "read_only"],
)
def test_file_system_errors_are_input_errors(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, target: str, code: int, record_property
) -> None:
    args = [*_previous_outputs(workspace), workspace / "r.json"]
    monkeypatch.setattr(target, _fail_with(code))
    assert run_case(workspace, args, record_property, "fs") == 2


def test_failed_commit_puts_previous_outputs_back(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, record_property
) -> None:
    """The model is moved into place, then moving the report fails: the model is rolled back."""
    args = [*_previous_outputs(workspace), workspace / "r.json"]
    replace, failed = os.replace, []

    def failing_replace(source, target) -> None:
        staged = ".onnxprune-stage-" in str(source) and ".previous" not in str(source)
        if Path(target) == workspace / "r.json" and staged and not failed:
            failed.append(target)
            raise OSError(5, os.strerror(5))
        replace(source, target)

    monkeypatch.setattr("onnxprune.paths.os.replace", failing_replace)
    assert run_case(workspace, args, record_property, "fs") == 2
    assert failed, "the commit did not reach the report"
    assert (workspace / "out.onnx").read_text() == "previous out.onnx"


def test_file_size_limit_is_an_input_error(workspace: Path) -> None:
    """A real write failure (EFBIG under RLIMIT_FSIZE), in a subprocess."""
    resource = pytest.importorskip("resource")
    before = snapshot(workspace)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "prune", "m.onnx", "-o", "big.onnx"],
        cwd=workspace,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=limit,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "onnxprune: error: big.onnx: File too large"
    assert snapshot(workspace) == before


def _detector(path: Path) -> None:
    """A model whose second input is a Reshape target: made-up inputs make it fail at run time."""
    weight = onnx.numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
            onnx.helper.make_node("Reshape", ["h", "shape"], ["y"]),
        ],
        "detector",
        [
            onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16]),
            onnx.helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2]),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["A", "B"])],
        [weight],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def test_compress_failing_after_the_model_is_written_leaves_nothing(
    workspace: Path, record_property
) -> None:
    _detector(workspace / "detector.onnx")
    args = ["compress", workspace / "detector.onnx", "-o", workspace / "out.onnx", *FAST]
    assert run_case(workspace, [*args, "--min-fan-in", "0"], record_property, "fs") == 2
