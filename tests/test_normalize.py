"""Every command sees the same, normalised model: Constant weights, weights in If branches, 0-d
and -1 inputs, input shape overrides, LSTM weights (models shaped like other exporters' files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxprune import PruneOptions, StructuredOptions, inspect_model, prune_file
from onnxprune.data import input_specs, load_dataset, synthetic_dataset
from onnxprune.errors import InputError
from onnxprune.normalize import load_normalized, parse_input_shape
from tests.conftest import REPO, run_cli
from tests.shapes import (
    constant_weights_mlp,
    if_branches_scalar_input,
    lstm_tagger,
    minus_one_batch_embedding,
)

FAST = ("--latency-runs", "0")


def _run_model(path: Path, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_constant_weights_are_seen_by_inspect_prune_structured_and_quantize(
    tmp_path: Path,
) -> None:
    model = constant_weights_mlp(tmp_path / "paddle.onnx")
    summary = inspect_model(model)
    assert summary["normalized"]["constants_lifted"] == 2
    assert summary["parameters"]["prunable_elements"] == 32 * 64 + 64 * 10
    assert summary["macs"]["total"] == 32 * 64 + 64 * 10
    report = prune_file(model, tmp_path / "p.onnx", PruneOptions(0.5))
    assert report["pruning"]["totals"]["pruned_weights"] == 2
    structured = prune_file(
        model, tmp_path / "s.onnx", StructuredOptions(target="ffn", sparsity=0.5, round_to=1)
    )
    assert structured["pruning"]["totals"]["units_after"] == 32
    result = run_cli("quantize", model, "-o", tmp_path / "q.onnx", "--mode", "dynamic", *FAST)
    assert result.returncode == 0, result.stderr
    ops = {n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops


def test_weights_inside_if_branches_are_found_counted_and_pruned(tmp_path: Path) -> None:
    model = if_branches_scalar_input(tmp_path / "vad.onnx")
    summary = inspect_model(model)
    assert summary["normalized"]["subgraph_weights_moved"] == 2
    prunable = [row["name"] for row in summary["initializers"] if row["prunable"]]
    assert sorted(prunable) == ["else8k_w", "then16k_w"]
    assert summary["macs"]["total"] == 2 * 32 * 16  # both branches, an upper bound
    assert all(layer.get("subgraph") for layer in summary["macs"]["layers"])
    out = tmp_path / "pruned.onnx"
    report = prune_file(model, out, PruneOptions(0.5))
    assert report["pruning"]["totals"]["sparsity_after"] == 0.5
    x = np.random.default_rng(1).standard_normal((3, 32)).astype(np.float32)
    for rate in (8000, 16000):
        (dense,) = _run_model(model, {"x": x, "sr": np.array(rate, np.int64)})
        (sparse,) = _run_model(out, {"x": x, "sr": np.array(rate, np.int64)})
        assert dense.shape == sparse.shape == (3, 16)
        assert not np.allclose(dense, sparse)  # the branch that ran was pruned


def test_data_aware_methods_refuse_subgraph_weights_with_the_reason(tmp_path: Path) -> None:
    model = if_branches_scalar_input(tmp_path / "vad.onnx")
    data = tmp_path / "calib.npz"
    x = np.random.default_rng(2).standard_normal((8, 32)).astype(np.float32)
    np.savez(data, x=x, sr=np.array(16000, np.int64))
    result = run_cli(
        "prune", model, "-o", tmp_path / "o.onnx", "--method", "wanda", "--calibration", data
    )
    assert result.returncode == 2
    assert "used inside a subgraph" in result.stdout
    assert not (tmp_path / "o.onnx").exists()


def test_zero_d_input_in_data_and_made_up_inputs(tmp_path: Path) -> None:
    model = if_branches_scalar_input(tmp_path / "vad.onnx")
    specs = input_specs(load_normalized(model))
    assert {s.name: s.sample_axis for s in specs} == {"x": 0, "sr": None}
    made_up = synthetic_dataset(specs, samples=4)
    assert made_up.inputs["sr"].shape == () and made_up.samples == 4
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.ones((6, 32), np.float32), sr=np.array(8000, np.int64))
    dataset = load_dataset(data, specs)
    assert dataset.samples == 6 and dataset.slice(0, 2)["sr"].shape == ()
    for extra in ((), ("--data", data)):
        result = run_cli("verify", model, model, *extra, *FAST)
        assert result.returncode == 0, result.stderr
    np.savez(data, x=np.ones((6, 32), np.float32), sr=np.array([8000] * 6, np.int64))
    with pytest.raises(InputError, match="0-d input"):
        load_dataset(data, specs)


def test_state_tensor_keeps_samples_on_its_batch_axis(tmp_path: Path) -> None:
    from onnxprune.data import InputSpec, _sample_axes

    axes = _sample_axes({"input": ("batch", 512), "state": (2, "batch", 128), "sr": ()})
    assert axes == {"input": 0, "state": 1, "sr": None}
    unnamed = _sample_axes({"input": (None, None), "state": (2, None, 128), "sr": ()})
    assert unnamed == {"input": 0, "state": 1, "sr": None}  # silero-vad's own declaration
    fixed = _sample_axes({"image": (1, 3, None, None)})
    assert fixed == {"image": 0}  # a fixed batch: nothing else has a dynamic batch
    specs = [
        InputSpec("input", np.dtype("float32"), ("batch", 4), 0),
        InputSpec("state", np.dtype("float32"), (2, "batch", 3), 1),
    ]
    data = tmp_path / "d.npz"
    np.savez(data, input=np.zeros((5, 4), np.float32), state=np.zeros((2, 5, 3), np.float32))
    feed = load_dataset(data, specs).slice(1, 3)
    assert feed["input"].shape == (2, 4) and feed["state"].shape == (2, 2, 3)


def test_minus_one_batch_gets_made_up_inputs_and_nonnegative_macs(tmp_path: Path) -> None:
    model = minus_one_batch_embedding(tmp_path / "emb.onnx")
    summary = inspect_model(model)
    assert summary["macs"]["total"] == 32 * 48
    result = run_cli("verify", model, model, *FAST)
    assert result.returncode == 0, result.stderr
    assert "top-1 agreement" not in result.stdout  # an embedding: cosine, not argmax
    assert "task embedding" in result.stdout
    assert "Result: no gates set" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [("x:1,3,224,224", ("x", (1, 3, 224, 224))), ("sr:", ("sr", ())), ("a:b:2", ("a:b", (2,)))],
)
def test_parse_input_shape(text: str, expected: tuple) -> None:
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("x:4", "1 dims given, the model's input has rank 2"),
        ("x:4,31", "axis 1 is 31, the model fixes it at 32"),
        ("y:4,32", "names no model input: y"),
        ("x:4;32", "is not NAME:d0,d1"),
    ],
)
def test_bad_input_shapes_are_refused(tmp_path: Path, override: str, message: str) -> None:
    model = minus_one_batch_embedding(tmp_path / "emb.onnx")
    result = run_cli("inspect", model, "--input-shape", override)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_input_shape_sets_macs_and_made_up_inputs(tmp_path: Path) -> None:
    model = minus_one_batch_embedding(tmp_path / "emb.onnx")
    assert inspect_model(model, input_shapes={"x": (4, 32)})["macs"]["total"] == 4 * 32 * 48
    result = run_cli("verify", model, model, "--input-shape", "x:2,32", "--json", *FAST)
    assert result.returncode == 0, result.stderr


def test_dim_names_are_checked_and_used(tmp_path: Path) -> None:
    model = constant_weights_mlp(tmp_path / "m.onnx")
    assert inspect_model(model, {"N": 8})["macs"]["total"] == 8 * (32 * 64 + 64 * 10)
    result = run_cli("inspect", model, "--dim", "batch=8")
    assert result.returncode == 2 and "no input has such a dim (symbolic: N)" in result.stderr


def test_lstm_weights_are_op_table_entries(tmp_path: Path) -> None:
    model = lstm_tagger(tmp_path / "crnn.onnx")
    rows = {r["name"]: r for r in inspect_model(model)["initializers"]}
    assert rows["W"]["prunable"] and rows["R"]["prunable"] and rows["W"]["op"] == "LSTM"
    assert rows["B"]["reason"] == "bias"
    report = prune_file(model, tmp_path / "p.onnx", PruneOptions(0.5, min_fan_in=0))
    assert {layer["name"] for layer in report["pruning"]["layers"]} == {"W", "R", "head"}


def test_made_up_images_are_large_enough_for_a_detector() -> None:
    from onnxprune.data import InputSpec

    spec = InputSpec("images", np.dtype("float32"), ("batch", 3, "height", "width"), 0)
    tokens = InputSpec("input_ids", np.dtype("int64"), ("batch", "sequence"), 0)
    made_up = synthetic_dataset([spec, tokens], samples=2)
    assert made_up.inputs["images"].shape == (2, 3, 64, 64)
    assert made_up.inputs["input_ids"].shape == (2, 16)


def test_structured_pruning_stops_at_subgraphs_with_the_reason(tmp_path: Path) -> None:
    """x -> MatMul(W0) -> h; If(sr == 16000) then MatMul(h, W16k) else MatMul(h, W8k): h's
    neurons are consumed inside the branches, which the channel tracer does not follow."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    source = onnx.load(if_branches_scalar_input(tmp_path / "vad.onnx"))
    graph = source.graph
    graph.initializer.append(
        numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "w0")
    )
    graph.node.insert(0, helper.make_node("MatMul", ["x", "w0"], ["h"]))
    for branch in (graph.node[-1].attribute[0].g, graph.node[-1].attribute[1].g):
        branch.node[0].input[0] = "h"
    graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32]))
    onnx.save(source, tmp_path / "deep.onnx")
    result = run_cli("prune", tmp_path / "deep.onnx", "-o", tmp_path / "o.onnx", "--structured")
    assert result.returncode == 2
    assert "used inside a subgraph" in result.stdout


@pytest.mark.parametrize("name", ["bert_tiny", "llama_gqa_tiny"])
def test_both_exporters_count_the_same_macs(name: str) -> None:
    """The same network exported by TorchScript and dynamo (default settings) counts the same
    MACs, with --dim applied to every layer (the old count ignored it on one export)."""
    hf = REPO / "fixtures" / "corpus" / "hf"
    exports = [hf / f"{name}_{exporter}" / "model.onnx" for exporter in ("torchscript", "dynamo")]
    per_token = {inspect_model(p)["macs"]["total"] for p in exports}
    at_32 = {inspect_model(p, {"sequence": 32})["macs"]["total"] for p in exports}
    assert len(per_token) == 1 and len(at_32) == 1
    assert at_32.pop() > 16 * per_token.pop()  # the pooler runs once per sequence, not token
