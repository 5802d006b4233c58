"""Small models in the shapes other exporters write: Constant-node weights (Paddle2ONNX), weights
inside ``If`` branches with a 0-d input (voice-activity models), a literal ``-1`` batch dim,
an LSTM, an embedding output. Seeded, so every test sees the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG_SEED = 0
F = TensorProto.FLOAT


def _tensor(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def constant_weights_mlp(path: Path) -> Path:
    """x[N,32] -> MatMul(W1 32x64, a Constant node) -> Relu -> MatMul(W2 64x10, Constant)."""
    rng = np.random.default_rng(RNG_SEED)
    nodes = [
        helper.make_node("Constant", [], ["w1"], value=_tensor("w1", (32, 64), rng)),
        helper.make_node("Constant", [], ["w2"], value=_tensor("w2", (64, 10), rng)),
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "paddle_like",
        [helper.make_tensor_value_info("x", F, ["N", 32])],
        [helper.make_tensor_value_info("logits", F, ["N", 10])],
    )
    return _save(graph, path)


def _branch(name: str, rng: np.random.Generator) -> onnx.GraphProto:
    weight = _tensor(f"{name}_w", (32, 16), rng)
    return helper.make_graph(
        [helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_out"])],
        name,
        [],
        [helper.make_tensor_value_info(f"{name}_out", F, ["N", 16])],
        initializer=[weight],
    )


def if_branches_scalar_input(path: Path) -> Path:
    """x[N,32], sr int64[] (0-d): If(sr == 16000) then MatMul(x, W16k) else MatMul(x, W8k);
    each branch keeps its weight as a subgraph initializer, as silero-vad does."""
    rng = np.random.default_rng(RNG_SEED)
    nodes = [
        helper.make_node(
            "Constant", [], ["rate"], value=numpy_helper.from_array(np.array(16000, np.int64))
        ),
        helper.make_node("Equal", ["sr", "rate"], ["is16k"]),
        helper.make_node(
            "If",
            ["is16k"],
            ["speech_logits"],
            then_branch=_branch("then16k", rng),
            else_branch=_branch("else8k", rng),
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "vad_like",
        [
            helper.make_tensor_value_info("x", F, ["N", 32]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("speech_logits", F, ["N", 16])],
    )
    return _save(graph, path)


def minus_one_batch_embedding(path: Path) -> Path:
    """x[-1, 32] (a literal -1 batch) -> Gemm(32x48) -> 'sentence_embedding' [-1, 48]."""
    rng = np.random.default_rng(RNG_SEED)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["sentence_embedding"], transB=1)],
        "embedder",
        [helper.make_tensor_value_info("x", F, [-1, 32])],
        [helper.make_tensor_value_info("sentence_embedding", F, [-1, 48])],
        initializer=[_tensor("w", (48, 32), rng), _tensor("b", (48,), rng)],
    )
    return _save(graph, path)


def lstm_tagger(path: Path) -> Path:
    """x[T, N, 16] -> LSTM(hidden 32) -> Y[T, 1, N, 32] -> Squeeze -> MatMul(32x8) -> logits."""
    rng = np.random.default_rng(RNG_SEED)
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=32),
        helper.make_node("Squeeze", ["y", "axis1"], ["ys"]),
        helper.make_node("MatMul", ["ys", "head"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "crnn_like",
        [helper.make_tensor_value_info("x", F, ["T", "N", 16])],
        [helper.make_tensor_value_info("logits", F, ["T", "N", 8])],
        initializer=[
            _tensor("W", (1, 128, 16), rng),
            _tensor("R", (1, 128, 32), rng),
            _tensor("B", (1, 256), rng),
            numpy_helper.from_array(np.array([1], np.int64), "axis1"),
            _tensor("head", (32, 8), rng),
        ],
    )
    return _save(graph, path)


def pre_norm_stack(path: Path, scales: tuple[float, ...] = (1.0, 1.0, 1.0)) -> Path:
    """x[N,16] -> for each scale s: y = y + MatMul(LayerNorm(y), s * W): a pre-norm stack
    where each block's output is the next block's skip input (as Hugging Face writes it)."""
    rng = np.random.default_rng(RNG_SEED)
    nodes, inits, current = [], [], "x"
    inits += [
        numpy_helper.from_array(np.ones(16, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(16, np.float32), "beta"),
    ]
    for index, scale in enumerate(scales):
        weight = (rng.standard_normal((16, 16)) * 0.3 * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes += [
            helper.make_node("LayerNormalization", [current, "gamma", "beta"], [f"n{index}"]),
            helper.make_node("MatMul", [f"n{index}", f"w{index}"], [f"f{index}"]),
            helper.make_node("Add", [current, f"f{index}"], [f"y{index}"], name=f"add{index}"),
        ]
        current = f"y{index}"
    nodes.append(helper.make_node("Identity", [current], ["hidden_state"]))
    graph = helper.make_graph(
        nodes,
        "pre_norm",
        [helper.make_tensor_value_info("x", F, ["N", 16])],
        [helper.make_tensor_value_info("hidden_state", F, ["N", 16])],
        initializer=inits,
    )
    return _save(graph, path)
