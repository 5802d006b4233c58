"""The batch size quality metrics are computed at, and why.

Dynamically quantized models compute their activation scales per batch
(``DynamicQuantizeLinear``; onnxruntime's fused ``DynamicQuantizeMatMul`` and the
``MatMulInteger`` that follows a dynamic quantization), so one sample's prediction depends on
the other samples in its batch. Such a model is evaluated one sample at a time unless a batch
size is given: the deployment batch size is the one whose predictions count.
"""

from __future__ import annotations

import functools
import os

import onnx

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DYNAMIC_QUANT_BATCH_SIZE",
    "DYNAMIC_QUANT_OPS",
    "dynamic_quant_ops",
    "evaluation_batch",
]

DEFAULT_BATCH_SIZE = 64
DYNAMIC_QUANT_BATCH_SIZE = 1
DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger"})


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


@functools.lru_cache(maxsize=64)
def _ops_of(path: str, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    model = onnx.load(path, load_external_data=False)
    found = {node.op_type for graph in _graphs(model.graph) for node in graph.node}
    return tuple(sorted(found & DYNAMIC_QUANT_OPS))


def dynamic_quant_ops(path: str | os.PathLike) -> list[str]:
    """The per-batch (dynamic) quantization op types the model at ``path`` uses, sorted (read
    once per file version: a search verifies the same baseline many times)."""
    stat = os.stat(path)
    return list(_ops_of(os.path.realpath(path), stat.st_mtime_ns, stat.st_size))


def evaluation_batch(given: int | None, models: dict[str, str | os.PathLike]) -> tuple[int, str]:
    """The batch size for quality metrics and the reason: ``given`` when set; else 1 if any of
    ``models`` (role -> path) is dynamically quantized, else ``DEFAULT_BATCH_SIZE``."""
    if given is not None:
        return given, "set by batch_size (--batch-size)"
    for role, path in models.items():
        ops = dynamic_quant_ops(path)
        if ops:
            return DYNAMIC_QUANT_BATCH_SIZE, (
                f"default for a dynamically quantized {role} ({', '.join(ops)}): its activation "
                "scales are computed per batch, so predictions depend on the batch size; give "
                "the deployment batch size with --batch-size"
            )
    return DEFAULT_BATCH_SIZE, "default"
