"""Calibration in stages: a big model run a slice at a time gives the statistics of one run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import onnxprune.staged_calibration as staged_calibration
from onnxprune.calibration import CalibrationOptions, collect_statistics
from onnxprune.data import input_specs, load_dataset
from onnxprune.model_io import load_model
from onnxprune.pruning import PruneOptions, prune_model
from onnxprune.staged import initializer_bytes, plan_slices
from onnxprune.weights import find_weights

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import scale  # noqa: E402  (bench/scale.py builds the synthetic decoder stacks)

STAGED = CalibrationOptions(gram=True, staged_above_bytes=0, slice_bytes=1, batch_size=5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block stack (d=64) with its weights in external data, and calibration data."""
    return scale.build(0.3, tmp_path_factory.mktemp("stack"), d=64, samples=16)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first node of every slice session built (so a test knows staging happened)."""
    starts: list[int] = []
    original = staged_calibration.slice_session

    def counting(model, piece, *args, **kwargs):
        starts.append(piece.start)
        return original(model, piece, *args, **kwargs)

    monkeypatch.setattr(staged_calibration, "slice_session", counting)
    return starts


def _statistics(path: Path, calibration: Path, options: CalibrationOptions):
    model = load_model(path)
    data = load_dataset(calibration, input_specs(model))
    return collect_statistics(model, find_weights(model)[0], data, options)[0]


def test_slices_cover_every_node_once_within_the_budget(stack: Path) -> None:
    model = load_model(stack)
    slices = plan_slices(model, 100_000)
    assert slices is not None and len(slices) > 2
    assert [s.start for s in slices[1:]] == [s.stop for s in slices[:-1]]
    assert slices[0].start == 0 and slices[-1].stop == len(model.graph)
    assert slices[0].inputs == ("x",)
    nodes = list(model.graph)
    for piece in slices:
        names = {v.name for n in nodes[piece.start : piece.stop] for v in n.inputs if v}
        weights = [model.graph.initializers[n] for n in names if n in model.graph.initializers]
        assert (
            sum(w.const_value.nbytes for w in weights) <= 100_000 or piece.stop == piece.start + 1
        )


def test_staged_statistics_equal_one_session_on_the_stack(stack: Path, built: list) -> None:
    npz = stack.with_suffix(".npz")
    whole = _statistics(stack, npz, CalibrationOptions(gram=True, batch_size=5))
    assert not built
    staged = _statistics(stack, npz, STAGED)
    assert len(built) > 2
    assert set(staged) == set(whole) and len(whole) == 6
    for name, stats in whole.items():
        assert staged[name].rows == stats.rows == 16 * scale.SEQ
        assert np.array_equal(staged[name].gram, stats.gram)
        assert np.array_equal(staged[name].sum_sq, stats.sum_sq)


def test_staged_wanda_prunes_the_same_bytes(stack: Path, built: list) -> None:
    whole, staged = load_model(stack), load_model(stack)
    data = load_dataset(stack.with_suffix(".npz"), input_specs(whole))
    options = PruneOptions(0.5, method="wanda")
    expected = prune_model(whole, options, data)
    small_slices = CalibrationOptions(staged_above_bytes=0, slice_bytes=200_000)
    result = prune_model(staged, options, data, small_slices)
    assert len(built) > 1
    assert result.to_dict() == expected.to_dict()
    for layer in result.layers:
        got = staged.graph.initializers[layer.name].const_value.tobytes()
        assert got == whole.graph.initializers[layer.name].const_value.tobytes()


@pytest.mark.parametrize("name", ["digits_transformer", "digits_cnn", "digits_mobile"])
def test_staged_statistics_agree_on_fixtures(name: str, built: list) -> None:
    """Fusions across a cut (Conv+Relu, attention) may change the last bits: not bytes."""
    path = REPO / "fixtures" / f"{name}.onnx"
    calibration = REPO / "fixtures" / f"{name}-calibration.npz"
    whole = _statistics(path, calibration, CalibrationOptions(gram=True))
    staged = _statistics(path, calibration, STAGED)
    assert len(built) > 2
    assert set(staged) == set(whole) and whole
    for layer, stats in whole.items():
        assert staged[layer].rows == stats.rows
        scale_of = np.abs(stats.gram).max()
        np.testing.assert_allclose(staged[layer].gram, stats.gram, rtol=0, atol=1e-5 * scale_of)


def test_small_models_are_calibrated_in_one_session(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("staged")

    monkeypatch.setattr(staged_calibration, "staged_groups", refuse)
    path = REPO / "fixtures" / "digits_cnn.onnx"
    assert initializer_bytes(load_model(path)) < CalibrationOptions().staged_above_bytes
    assert _statistics(path, REPO / "fixtures" / "digits_cnn-calibration.npz", CalibrationOptions())
    with pytest.raises(AssertionError, match="staged"):
        _statistics(path, REPO / "fixtures" / "digits_cnn-calibration.npz", STAGED)


def test_slices_after_the_last_layer_are_not_run(stack: Path, built: list) -> None:
    model = load_model(stack)
    data = load_dataset(stack.with_suffix(".npz"), input_specs(model))
    first = [w for w in find_weights(model)[0] if w.name == "l0.fc1.weight"]
    stats, _ = collect_statistics(model, first, data, STAGED)
    assert list(stats) == ["l0.fc1.weight"]
    slices = plan_slices(model, STAGED.slice_bytes)
    assert 0 < len(built) < len(slices) / 2


def test_graphs_with_subgraphs_are_not_sliced() -> None:
    from onnx import TensorProto, helper

    branch = helper.make_graph(
        [helper.make_node("Identity", ["y"], ["z"])],
        "branch",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("If", ["c"], ["out"], then_branch=branch, else_branch=branch),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.0] * 16)],
    )
    model = ir.serde.deserialize_model(helper.make_model(graph))
    assert plan_slices(model, 1) is None
    model.graph.remove(list(model.graph)[1], safe=False)
    assert plan_slices(model, 1) is not None


def test_untyped_int64_values_cross_a_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shape computed before a cut and used after it (no value_info: its type is unknown)."""
    from onnx import TensorProto, helper, numpy_helper

    import onnxprune.staged as staged
    from onnxprune.data import Dataset

    weights = [
        numpy_helper.from_array(np.full((4, 6), 0.5, np.float32), "w1"),
        numpy_helper.from_array(np.full((6, 4), 0.5, np.float32), "w2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["h2"]),
            helper.make_node("Reshape", ["h2", "s"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        weights,
    )
    opsets = [helper.make_opsetid("", 17)]
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=opsets))
    monkeypatch.setattr(staged, "SLICE_BYTES", 1)
    assert len(plan_slices(model, 1)) == 3
    data = Dataset({"x": np.arange(12, dtype=np.float32).reshape(3, 4)})
    outputs = staged.outputs_in_slices(model, data, 2, ["y"], tmp_path, 1)
    expected = data.inputs["x"].sum(axis=1, keepdims=True) * 1.5 * np.ones((1, 4))
    np.testing.assert_allclose(outputs["y"], expected)
