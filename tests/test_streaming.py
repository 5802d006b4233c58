"""Streaming big models: external data is pruned a tensor at a time, with the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from conftest import run_cli

from onnxprune.calibration import CalibrationOptions, collect_statistics
from onnxprune.data import input_specs, load_dataset
from onnxprune.model_io import load_model, save_model, uses_external_data
from onnxprune.pruning import PruneOptions, prune_model
from onnxprune.structured.pipeline import StructuredOptions, prune_structured
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


_CAPPED = """
import resource, sys
import onnxprune
from onnxprune.pruning import PruneOptions

with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) << 10
cap = size + ({headroom_mb} << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
onnxprune.prune_file(sys.argv[1], sys.argv[2], PruneOptions(0.5))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_prunes_within_a_small_address_space_cap(tmp_path: Path) -> None:
    """26 MB of external data in 40 tensors, 400 MB of address space beyond the imports.

    Streaming needs about 130 MB there. The code before streaming kept every tensor mapped
    (onnx-ir maps the whole data file per tensor) and every result in memory: it needed
    1.2 GB and failed with ENOMEM under this cap.
    """
    model = scale.build(24, tmp_path, d=256, samples=1)
    code = _CAPPED.format(headroom_mb=400)
    done = subprocess.run(
        [sys.executable, "-c", code, str(model), str(tmp_path / "out.onnx")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.onnx.data").stat().st_size >= (
        tmp_path / "stack24.onnx.data"
    ).stat().st_size


def test_cli_reports_peak_memory_and_wall_time(stack: Path, tmp_path: Path) -> None:
    for args in (
        ["inspect", stack, "--json"],
        ["prune", stack, "-o", tmp_path / "p.onnx", "--json"],
    ):
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
        resources = json.loads(done.stdout)["resources"]
        assert 20 < resources["peak_rss_mb"] < 4000
        assert 0 < resources["wall_seconds"] < 600


@pytest.mark.parametrize("importance", ["obs", "l2"])
def test_structured_reconstruct_streams_with_the_same_bytes(stack: Path, importance: str) -> None:
    streamed, held = load_model(stack), _in_memory(stack)
    data = load_dataset(stack.with_suffix(".npz"), input_specs(held))
    options = StructuredOptions(target="ffn", sparsity=0.5, importance=importance, reconstruct=True)
    small = CalibrationOptions(square_budget_bytes=1)
    result = prune_structured(streamed, options, data, small)
    expected = prune_structured(held, options, data)
    assert result.to_dict() == expected.to_dict() and result.pruned
    for name, value in held.graph.initializers.items():
        tensor = streamed.graph.initializers[name].const_value
        assert tensor.tobytes() == value.const_value.tobytes(), name
    weight = result.pruned[0]["consumers"][0]
    assert isinstance(streamed.graph.initializers[weight].const_value, ir.ExternalTensor)
