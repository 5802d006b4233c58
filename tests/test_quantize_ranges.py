"""Static int8 activation ranges from real tokens: which quantizers get them, what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from quant_models import tiny_transformer, token_data

from onnxprune.data import input_specs, load_dataset
from onnxprune.model_io import load_model
from onnxprune.quant.ranges import SetActivationRangesPass, activation_quantizers, uint8_range
from onnxprune.quantize import QuantizeOptions, quantize_model_file

_GRAPH = """
<ir_version: 8, opset_import: ["" : 17]>
qdq (float[N, 4] x, float[N, 4] r) => (float[N, 2] y, float[N, 4] z) {
  xq = QuantizeLinear(x, xs, xz)
  xd = DequantizeLinear(xq, xs, xz)
  y = MatMul(xd, w)
  rq = QuantizeLinear(r, rs, rz)
  rd = DequantizeLinear(rq, rs, rz)
  z = Relu(rd)
}
"""


def _model() -> onnx.ModelProto:
    model = onnx.parser.parse_model(_GRAPH)
    constants = {"w": np.ones((4, 2), np.float32)}
    for name in ("x", "r"):
        constants |= {f"{name}s": np.float32(1.0), f"{name}z": np.uint8(128)}
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in constants.items())
    return model


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def test_uint8_range_keeps_zero_exact() -> None:
    scale, zero = uint8_range(np.array([[0.5, 2.0], [1.0, 3.1]]), "minmax")
    assert np.isclose(scale, 3.1 / 255) and zero == 0  # minimum 0.5 widened to 0
    scale, zero = uint8_range(np.array([[-1.0, 1.55]]), "minmax")
    assert np.isclose(scale, 2.55 / 255) and zero == 100


def test_only_matmul_inputs_get_ranges_from_rows() -> None:
    model = _model()
    assert set(activation_quantizers(model)) == {"x"}  # r feeds a Relu: left alone
    rows = {"x": np.array([[-2.0, 0.0, 1.0, 3.1]]), "r": np.array([[9.0, 9.0, 9.0, 9.0]])}
    assert SetActivationRangesPass(rows, "minmax").call(model) == 1
    assert np.isclose(_constant(model, "xs"), 5.1 / 255) and _constant(model, "xz") == 100
    assert _constant(model, "rs") == 1.0 and _constant(model, "rz") == 128
    assert SetActivationRangesPass(rows, "entropy").call(_model()) == 0


def _real_token_rows(model: Path, tokens: Path, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    proto = onnx.load(str(model))
    proto.graph.output.append(onnx.ValueInfoProto(name=tensor))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = dict(np.load(tokens))
    values = session.run([tensor], feed)[0]
    return values[feed["attention_mask"].astype(bool)], values.reshape(-1, values.shape[-1])


def _spiked_padding(folder: Path) -> tuple[Path, Path]:
    # padded positions read token 0, whose embedding is one spike: LayerNorm turns it into one
    # channel near sqrt(hidden), wider than any real token's range
    model = onnx.load(str(tiny_transformer(folder / "tiny.onnx")))
    table = next(t for t in model.graph.initializer if t.name == "emb")
    values = numpy_helper.to_array(table).copy()
    values[0] = 0.0
    values[0, 3] = 100.0
    table.CopyFrom(numpy_helper.from_array(values, "emb"))
    onnx.save(model, str(folder / "spiked.onnx"))
    tokens = dict(np.load(token_data(folder / "t.npz")))
    tokens["input_ids"] = np.where(tokens["attention_mask"] == 1, tokens["input_ids"] % 47 + 1, 0)
    np.savez(folder / "spiked.npz", **tokens)
    return folder / "spiked.onnx", folder / "spiked.npz"


def test_padded_positions_do_not_set_the_range(tmp_path: Path) -> None:
    model, tokens = _spiked_padding(tmp_path)
    data = load_dataset(tokens, input_specs(load_model(model)))
    options = QuantizeOptions(mode="static", calibration=str(tokens), smooth="off")
    section = quantize_model_file(model, tmp_path / "q.onnx", options, data)
    assert section["ranges_from_real_tokens"] == 4  # h0 (Q/K/V), context, h1, gelu
    real, every = _real_token_rows(model, tokens, "h0")
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    quantizer = next(
        n for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "h0"
    )
    scale = _constant(quantized, quantizer.input[1])
    assert np.isclose(scale, uint8_range(real.astype(np.float64), "minmax")[0], rtol=1e-6)
    assert scale < uint8_range(every.astype(np.float64), "minmax")[0]
