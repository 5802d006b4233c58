"""Streaming big models: external data is pruned a tensor at a time, with the same bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from onnxprune.calibration import CalibrationOptions, collect_statistics
from onnxprune.data import input_specs, load_dataset
from onnxprune.model_io import load_model, save_model, uses_external_data
from onnxprune.pruning import PruneOptions, prune_model
from onnxprune.weights import find_weights

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import scale  # noqa: E402  (bench/scale.py builds the synthetic decoder stacks)

CASES = {
    "magnitude": PruneOptions(0.5),
    "magnitude-global": PruneOptions(0.6, allocation="global"),
    "magnitude-2of4": PruneOptions(None, pattern=(2, 4)),
    "wanda": PruneOptions(0.5, method="wanda"),
    "sparsegpt": PruneOptions(0.5, method="sparsegpt"),
    "sparsegpt-sequential": PruneOptions(0.5, method="sparsegpt", sequential=True),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-block stack (d=64) with its weights in external data, and calibration data."""
    return scale.build(0.3, tmp_path_factory.mktemp("stack"), d=64, samples=16)


def _in_memory(path: Path) -> ir.Model:
    model = load_model(path)
    ir.external_data.load_to_model(model)
    assert not uses_external_data(model)
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_streaming_gives_the_bytes_of_the_in_memory_path(stack: Path, case: str) -> None:
    streamed, held = load_model(stack), _in_memory(stack)
    data = load_dataset(stack.with_suffix(".npz"), input_specs(held))
    small = CalibrationOptions(square_budget_bytes=1)  # one Gram matrix per calibration pass
    result = prune_model(streamed, CASES[case], data, small)
    expected = prune_model(held, CASES[case], data)
    assert result.to_dict() == expected.to_dict()
    assert result.totals()["zeros_after"] > 0
    for layer in result.layers:
        tensor = streamed.graph.initializers[layer.name].const_value
        assert isinstance(tensor, ir.ExternalTensor)  # the result was streamed, not held
        assert tensor.tobytes() == held.graph.initializers[layer.name].const_value.tobytes()


def test_gram_matrices_in_groups_equal_one_pass(stack: Path) -> None:
    model = load_model(stack)
    data = load_dataset(stack.with_suffix(".npz"), input_specs(model))
    weights, _ = find_weights(model)
    together, _ = collect_statistics(model, weights, data, CalibrationOptions(gram=True))
    grouped, _ = collect_statistics(
        model, weights, data, CalibrationOptions(gram=True, square_budget_bytes=1)
    )
    assert set(grouped) == set(together) and len(together) == len(weights)
    for name, stats in together.items():
        assert np.array_equal(grouped[name].gram, stats.gram)
        assert np.array_equal(grouped[name].sum_sq, stats.sum_sq)


def test_saved_streamed_model_equals_saved_in_memory_model(stack: Path, tmp_path: Path) -> None:
    streamed, held = load_model(stack), _in_memory(stack)
    for model in (streamed, held):
        prune_model(model, CASES["magnitude"])
    for folder, model in (("streamed", streamed), ("held", held)):
        (tmp_path / folder).mkdir()
        save_model(model, tmp_path / folder / "pruned.onnx", external_data=True)
    for name in ("pruned.onnx", "pruned.onnx.data"):
        assert (tmp_path / "streamed" / name).read_bytes() == (
            tmp_path / "held" / name
        ).read_bytes()
