"""The onnxruntime optimisation stage: fused attention on default exports, same outputs.

Uses the tiny BERT exports of ``tests/test_heads.py`` (fixture ``exports``), dense and with half
of the heads removed: after ``OptimizeForRuntimePass`` the attention runs in one onnxruntime
kernel per layer and the outputs match the unoptimised model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxprune.model_io import save_model
from onnxprune.optimize import OptimizeForRuntimePass, ResolveInferredDimsPass
from onnxprune.structured.pipeline import StructuredOptions, prune_structured
from tests.test_heads import feed, hf_exports

FUSED = {"Attention", "MultiHeadAttention"}
exports = pytest.fixture(scope="session", name="exports")(hf_exports)


def _run(path: Path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed())


@pytest.mark.parametrize("name", ["bert_tiny_torchscript", "bert_tiny_dynamo"])
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "half_heads"])
def test_optimised_model_fuses_attention_and_computes_the_same(
    name: str, pruned: bool, exports: dict[str, Path], tmp_path: Path
) -> None:
    model = ir.load(exports[name])
    ir.external_data.load_to_model(model)
    if pruned:
        prune_structured(model, StructuredOptions(target="heads", sparsity=0.5))
    save_model(model, tmp_path / "before.onnx")
    stage = OptimizeForRuntimePass()
    stage(model)
    save_model(model, tmp_path / "after.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "after.onnx")).graph.node}
    assert ops & FUSED, f"no fused attention: {stage.fusions}"
    assert "Softmax" not in ops  # every attention block was fused
    for got, expected in zip(
        _run(tmp_path / "after.onnx"), _run(tmp_path / "before.onnx"), strict=True
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_inferred_dim_becomes_the_number_the_input_determines() -> None:
    """``Reshape(x[batch, seq, 12], [batch, seq, -1, 4])``: the -1 is 3 whatever batch and seq."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[batch, seq, 12] x) => (float[batch, seq, 3, 4] y)
      <int64[1] zero = {0}, int64[1] one = {1}, int64[1] two = {2}, int64[2] tail = {-1, 4}> {
        shape = Shape(x)
        batch = Slice(shape, zero, one)
        seq = Slice(shape, one, two)
        target = Concat<axis = 0>(batch, seq, tail)
        y = Reshape(x, target)
    }
    """
    model = ir.serde.deserialize_model(onnx.parser.parse_model(text))
    assert ResolveInferredDimsPass()(model).modified
    concat = next(node for node in model.graph if node.op_type == "Concat")
    assert concat.inputs[2].const_value.numpy().tolist() == [3, 4]


def test_compress_optimize_reports_both_dense_baselines(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    import onnxprune

    report = onnxprune.compress_file(
        exports["bert_tiny_dynamo"],
        tmp_path / "c.onnx",
        StructuredOptions(target="heads", sparsity=0.5),
        onnxprune.VerifyOptions(latency_runs=20, latency_batch=2, synthetic_samples=8),
        cleanup=False,
        optimize=True,
    )
    assert [s["stage"] for s in report["stages"]] == ["prune", "optimize"]
    section = report["optimization"]
    assert section["fusions"]["attention"] == 2 and section["dense_fusions"]["attention"] == 2
    against_optimized = section["against_optimized_dense"]
    assert against_optimized["latency"]["runs"] == 20
    assert report["verification"]["latency"]["runs"] == 20  # against the original dense model
    ops = {node.op_type for node in onnx.load(str(tmp_path / "c.onnx")).graph.node}
    assert ops & FUSED
