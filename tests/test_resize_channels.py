"""Channels pass through Resize/Upsample when the channel axis is not resized (FPN top-down
paths of detectors and PaddleOCR's DB head); a Resize given by 'sizes' or scaling channels
blocks the group with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxprune
from onnxprune.normalize import load_normalized
from onnxprune.structured.dependency import find_channel_groups

HALF = onnxprune.StructuredOptions(target="channels", sparsity=0.5, round_to=1)


def _model(path: Path, scales: list[float] | None, sizes: list[int] | None) -> Path:
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w1[4:] *= 0.01  # the weak half goes
    w2 = (rng.standard_normal((4, 8, 1, 1)) * 0.3).astype(np.float32)
    inputs = ["r", "roi", "scales"] + (["sizes"] if sizes else [])
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
        numpy_helper.from_array(np.array(scales or [], np.float32), "scales"),
    ]
    if sizes:
        inits.append(numpy_helper.from_array(np.array(sizes, np.int64), "sizes"))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Resize", inputs, ["u"], mode="nearest"),
        helper.make_node("Conv", ["u", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fpn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_channels_follow_a_spatial_resize(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx", [1, 1, 2, 2], None)
    out = tmp_path / "p.onnx"
    report = onnxprune.prune_file(model, out, HALF)
    (group,) = report["pruning"]["groups"]
    assert group["kept"] == [0, 1, 2, 3]
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    original = onnx.load(model)
    for tensor in original.graph.initializer:
        if tensor.name == "w1":
            zeroed = numpy_helper.to_array(tensor).copy()
            zeroed[4:] = 0
            tensor.CopyFrom(numpy_helper.from_array(zeroed, "w1"))
    run = lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})  # noqa: E731
    np.testing.assert_allclose(run(str(out))[0], run(original.SerializeToString())[0], atol=1e-6)


@pytest.mark.parametrize(
    ("scales", "sizes", "reason"),
    [([1, 2, 2, 2], None, "resizes the channel axis"), (None, [1, 8, 16, 16], "'sizes' fixes")],
)
def test_resizes_that_touch_channels_block(tmp_path: Path, scales, sizes, reason: str) -> None:
    model = load_normalized(_model(tmp_path / "m.onnx", scales, sizes), infer_shapes=True)
    (group,) = [g for g in find_channel_groups(model) if g.id == "w1"]
    assert group.blocked is not None and reason in group.blocked
