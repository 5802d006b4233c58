"""int4: embedding tables round-trip through GatherBlockQuantized within half a step
(asymmetric) or one step (symmetric), mixed
precision picks the same most-sensitive layers every time, options refuse with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from quant_models import tiny_transformer, token_data

from onnxprune.data import input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.model_io import load_model
from onnxprune.quant.int4 import quantize_int4_model
from onnxprune.quant.selection import most_sensitive
from onnxprune.quantize import QuantizeOptions

BLOCK = 16


def _embedding_model(table: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed")],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["N", table.shape[1]])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("symmetric", [False, True], ids=["asymmetric", "symmetric"])
def test_embedding_round_trip_within_stated_error(symmetric: bool) -> None:
    table = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
    quantized, plan, _ = quantize_int4_model(
        _embedding_model(table), {}, block_size=BLOCK, symmetric=symmetric
    )
    assert [n.op_type for n in quantized.graph.node] == ["GatherBlockQuantized"]
    assert [(d.node, d.precision) for d in plan] == [("embed", "int4")]
    session = ort.InferenceSession(
        quantized.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    ids = np.arange(40, dtype=np.int64)
    (rows,) = session.run(None, {"ids": ids})
    blocks = table.reshape(40, -1, BLOCK)
    if symmetric:
        # onnxruntime maps the block's largest magnitude to -8 (step = |max| / 8); values of the
        # other sign clip at +7, so the bound is one step, not half of one.
        bound = np.abs(blocks).max(-1, keepdims=True) / 8
    else:  # 16 levels over [min, max] (zero included): half of step = range / 15
        bound = (np.maximum(blocks.max(-1), 0) - np.minimum(blocks.min(-1), 0))[..., None] / 30
    error = np.abs(rows.reshape(blocks.shape) - blocks)
    assert np.all(error <= bound + 1e-5)
    assert error.max() > 0  # it really is quantized


def test_small_tables_stay_float_with_reason() -> None:
    table = np.ones((4, 8), np.float32)
    quantized, plan, _ = quantize_int4_model(_embedding_model(table), {}, block_size=BLOCK)
    assert [n.op_type for n in quantized.graph.node] == ["Gather"]
    assert plan[0].precision == "float" and "do not split into blocks" in plan[0].reason


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny4")
    model = tiny_transformer(folder / "tiny.onnx")
    data = load_dataset(token_data(folder / "t.npz"), input_specs(load_model(model)))
    return model, data


def _int8_layers(model_path: Path, data) -> tuple[list[str], set[str]]:
    quantized, plan, _ = quantize_int4_model(
        onnx.load(str(model_path)), {}, block_size=BLOCK, int8_ratio=0.34, data=data
    )
    bits = {
        n.name.removesuffix("_Q8"): next(a.i for a in n.attribute if a.name == "bits")
        for n in quantized.graph.node
        if n.op_type == "MatMulNBits"
    }
    return sorted(d.node for d in plan if d.precision == "int8"), {
        n for n, b in bits.items() if b == 8
    }


def test_mixed_precision_is_deterministic_and_applied(tiny) -> None:
    first, applied = _int8_layers(*tiny)
    second, _ = _int8_layers(*tiny)
    assert first == second and len(first) == 2  # round(0.34 * 6)
    assert applied == set(first)


def test_most_sensitive_breaks_ties_by_name() -> None:
    errors = {"b": 0.5, "a": 0.5, "c": 0.9, "d": 0.1}
    assert most_sensitive(errors, 0.5) == ["c", "a"]
    assert most_sensitive(errors, 0.0) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "gptq"}, "data-aware"),
        ({"int8_ratio": 1.5}, "--int8-ratio"),
        ({"calibrate_method": "kl"}, "calibration method"),
        ({"smooth": "1.0"}, "--smooth"),
    ],
)
def test_options_refuse_with_reason(options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        QuantizeOptions(mode="int4", **options).validate()


@pytest.mark.parametrize(("cols", "packed"), [(64, True), (48, False)], ids=["even", "odd_blocks"])
def test_asymmetric_tables_are_packed_when_blocks_pair_up(cols: int, packed: bool) -> None:
    # 4 blocks of 16: uint8 data, two values a byte (onnxprune.quant.tables4); 3 blocks: the
    # zero points would straddle bytes, so onnxruntime's own (numpy) path writes uint4 tensors
    table = np.random.default_rng(4).standard_normal((10, cols)).astype(np.float32)
    quantized, _, _ = quantize_int4_model(_embedding_model(table), {}, block_size=BLOCK)
    (node,) = quantized.graph.node
    data = next(t for t in quantized.graph.initializer if t.name == node.input[0])
    assert node.op_type == "GatherBlockQuantized"
    assert (data.data_type == TensorProto.UINT8) == packed
    if packed:
        assert list(data.dims) == [10, cols // 2]
    session = ort.InferenceSession(
        quantized.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (rows,) = session.run(None, {"ids": np.arange(10, dtype=np.int64)})
    blocks = table.reshape(10, -1, BLOCK)
    bound = (np.maximum(blocks.max(-1), 0) - np.minimum(blocks.min(-1), 0))[..., None] / 30
    assert np.all(np.abs(rows.reshape(blocks.shape) - blocks) <= bound + 1e-5)
