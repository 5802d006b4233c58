"""The scratch file of a streamed prune becomes the output's data file: moved, same bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune.model_io import load_model, save_model
from onnxprune.pruning import PruneOptions, prune_model
from onnxprune.save_plan import save_plan
from onnxprune.streaming import move_scratch, scratch_for

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import scale  # noqa: E402  (bench/scale.py builds the synthetic decoder stacks)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scale.build(0.3, tmp_path_factory.mktemp("stack"), d=64, samples=1)


def _pruned(path: Path) -> ir.Model:
    model = load_model(path)
    prune_model(model, PruneOptions(0.5))
    return model


def _saved(model: ir.Model, folder: Path, move: bool) -> Path:
    folder.mkdir()
    save_model(model, folder / "p.onnx", external_data=True, move_scratch=move)
    return folder / "p.onnx"


def test_save_plan_is_where_onnx_ir_saves(stack: Path, tmp_path: Path) -> None:
    model = load_model(stack)
    plan = save_plan(model)
    ir.save(model, tmp_path / "m.onnx", external_data="m.onnx.data")
    proto = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    saved = {
        t.name: tuple(int(e.value) for e in t.external_data if e.key in ("offset", "length"))
        for t in proto.graph.initializer
        if t.external_data
    }
    assert plan == saved and len(plan) > 4


def test_moved_scratch_gives_the_bytes_of_a_copying_save(stack: Path, tmp_path: Path) -> None:
    moved, copied = _pruned(stack), _pruned(stack)
    scratch = scratch_for(moved).path
    out = _saved(moved, tmp_path / "moved", move=True)
    reference = _saved(copied, tmp_path / "copied", move=False)
    for suffix in ("", ".data"):
        assert Path(f"{out}{suffix}").read_bytes() == Path(f"{reference}{suffix}").read_bytes()
    assert not scratch.exists()  # moved, not copied
    for name, value in moved.graph.initializers.items():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):  # the model now reads the output's data
            assert Path(tensor.path) == Path(f"{out}.data")
        expected = copied.graph.initializers[name].const_value.tobytes()
        assert tensor.tobytes() == expected, name


def test_added_initializer_falls_back_to_a_copy(stack: Path, tmp_path: Path) -> None:
    moved, copied = _pruned(stack), _pruned(stack)
    for model in (moved, copied):
        extra = ir.Value(name="extra", const_value=ir.tensor(np.arange(300, dtype=np.float32)))
        model.graph.register_initializer(extra)
    assert not move_scratch(moved, tmp_path, "unused.data")  # the planned layout no longer holds
    assert scratch_for(moved).path.exists()
    out = _saved(moved, tmp_path / "moved", move=True)
    reference = _saved(copied, tmp_path / "copied", move=False)
    assert Path(f"{out}.data").read_bytes() == Path(f"{reference}.data").read_bytes()
