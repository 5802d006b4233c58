"""A tiny seeded transformer block for the quantization tests: embedding Gather, LayerNorm,
Q/K/V projections with bias Adds, attention-score MatMuls, Softmax, residual Adds, an Erf GELU
FFN. Hidden 32, FFN 64, vocabulary 48, one head; inputs ``input_ids`` and ``attention_mask``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN, FFN, VOCAB = 32, 64, 48


def _init(rng, name: str, shape: tuple[int, ...], scale: float = 0.2) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _linear(name: str, source: str, out: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("MatMul", [source, f"{name}.w"], [f"{name}.mm"], name=f"{name}/MatMul"),
        helper.make_node("Add", [f"{name}.b", f"{name}.mm"], [out], name=f"{name}/Add"),
    ]


def _layernorm(name: str, source: str, out: str) -> onnx.NodeProto:
    return helper.make_node(
        "LayerNormalization", [source, f"{name}.g", f"{name}.beta"], [out], name=name, axis=-1
    )


def _nodes() -> list[onnx.NodeProto]:
    make = helper.make_node
    return [
        make("Gather", ["emb", "input_ids"], ["e"], name="embeddings/Gather"),
        _layernorm("ln0", "e", "h0"),
        *_linear("q", "h0", "q"),
        *_linear("k", "h0", "k"),
        *_linear("v", "h0", "v"),
        make("Transpose", ["k"], ["kt"], name="k/Transpose", perm=[0, 2, 1]),
        make("MatMul", ["q", "kt"], ["scores"], name="attention/MatMul"),
        make("Div", ["scores", "sqrt_d"], ["scaled"], name="attention/Div"),
        make("Cast", ["attention_mask"], ["maskf"], name="mask/Cast", to=TensorProto.FLOAT),
        make("Unsqueeze", ["maskf", "one"], ["mask3"], name="mask/Unsqueeze"),
        make("Sub", ["unit", "mask3"], ["inverse"], name="mask/Sub"),
        make("Mul", ["inverse", "minus_big"], ["bias"], name="mask/Mul"),
        make("Add", ["scaled", "bias"], ["masked"], name="attention/AddMask"),
        make("Softmax", ["masked"], ["probs"], name="attention/Softmax", axis=-1),
        make("MatMul", ["probs", "v"], ["context"], name="attention/MatMul_1"),
        *_linear("o", "context", "attn"),
        make("Add", ["attn", "h0"], ["res1"], name="attention/residual"),
        _layernorm("ln1", "res1", "h1"),
        *_linear("ffn1", "h1", "f1"),
        make("Div", ["f1", "sqrt2"], ["f1s"], name="gelu/Div"),
        make("Erf", ["f1s"], ["erf"], name="gelu/Erf"),
        make("Add", ["erf", "unit"], ["erf1"], name="gelu/Add"),
        make("Mul", ["f1", "erf1"], ["g0"], name="gelu/Mul"),
        make("Mul", ["g0", "half"], ["gelu"], name="gelu/Mul_1"),
        *_linear("ffn2", "gelu", "f2"),
        make("Add", ["f2", "h1"], ["res2"], name="ffn/residual"),
        _layernorm("ln2", "res2", "hidden"),
    ]


def _initializers(rng: np.random.Generator) -> list[onnx.TensorProto]:
    found = [_init(rng, "emb", (VOCAB, HIDDEN), 1.0)]
    shapes = {"q": (HIDDEN, HIDDEN), "k": (HIDDEN, HIDDEN), "v": (HIDDEN, HIDDEN)}
    shapes |= {"o": (HIDDEN, HIDDEN), "ffn1": (HIDDEN, FFN), "ffn2": (FFN, HIDDEN)}
    for name, shape in shapes.items():
        found += [_init(rng, f"{name}.w", shape), _init(rng, f"{name}.b", (shape[1],), 0.05)]
    for name in ("ln0", "ln1", "ln2"):
        found += [
            numpy_helper.from_array(np.ones(HIDDEN, np.float32), f"{name}.g"),
            numpy_helper.from_array(np.zeros(HIDDEN, np.float32), f"{name}.beta"),
        ]
    scalars = {"sqrt_d": HIDDEN**0.5, "unit": 1.0, "minus_big": -1e4, "sqrt2": 2**0.5}
    found += [
        numpy_helper.from_array(np.float32(v), k) for k, v in (scalars | {"half": 0.5}).items()
    ]
    found.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    return found


def tiny_transformer(path: Path, seed: int = 0) -> Path:
    """Save the block at ``path`` (opset 17) and return the path."""
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "S"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "S"]),
    ]
    output = helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", "S", HIDDEN])
    graph = helper.make_graph(
        _nodes(), "tiny_bert", inputs, [output], _initializers(np.random.default_rng(seed))
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def token_data(path: Path, samples: int = 32, length: int = 8, seed: int = 1) -> Path:
    """Random token ids and masks (the last positions of some rows padded) as a .npz."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (samples, length)).astype(np.int64)
    mask = np.ones((samples, length), np.int64)
    mask[::3, -2:] = 0
    np.savez(path, input_ids=ids, attention_mask=mask)
    return path
