"""Describe a model: signature, opsets, op histogram, parameters and every initializer.

The per-initializer table uses the same rules as pruning (``onnxprune.weights``), so what
``inspect`` calls prunable is exactly what ``prune`` will consider.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx_ir as ir

from onnxprune.macs import count_macs
from onnxprune.model_io import load_model, uses_external_data
from onnxprune.normalize import InputShapes, NormalizeModelPass
from onnxprune.streaming import release
from onnxprune.weights import find_weights

__all__ = ["inspect_model", "render_inspection"]


def _dims(value: ir.Value) -> list[int | str | None]:
    if value.shape is None:
        return []
    return [d if isinstance(d, int) else d.value for d in value.shape]


def _dtype_name(dtype: ir.DataType | None) -> str | None:
    return str(np.dtype(dtype.numpy())) if dtype is not None else None


def _signature(values: list[ir.Value]) -> list[dict]:
    return [{"name": v.name, "dtype": _dtype_name(v.dtype), "shape": _dims(v)} for v in values]


def _op_histogram(graph: ir.Graph) -> dict[str, int]:
    counts = Counter(
        (f"{node.domain}::" if node.domain else "") + node.op_type
        for node in ir.traversal.RecursiveGraphIterator(graph)
    )
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _initializer_rows(model: ir.Model) -> list[dict]:
    prunable, skipped = find_weights(model)
    verdicts = {w.name: (True, w.op_type, None) for w in prunable}
    verdicts.update({s.name: (False, None, s.reason) for s in skipped})
    rows = []
    for name, value in model.graph.initializers.items():
        array = value.const_value.numpy() if value.const_value is not None else np.zeros(0)
        zeros = int(np.count_nonzero(array == 0))
        shape, size, nbytes = [int(d) for d in array.shape], int(array.size), int(array.nbytes)
        del array
        release(value)  # one tensor of external data mapped at a time
        is_prunable, op_type, reason = verdicts[name]
        rows.append(
            {
                "name": name,
                "dtype": _dtype_name(value.dtype),
                "shape": shape,
                "elements": size,
                "bytes": nbytes,
                "sparsity": float(zeros / size) if size else 0.0,
                "prunable": is_prunable,
                "op": op_type,
                "reason": reason,
            }
        )
    return rows


def inspect_model(
    path: str | os.PathLike,
    dims: dict[str, int] | None = None,
    input_shapes: InputShapes | None = None,
) -> dict:
    """A JSON-ready description of the model at ``path``, as every command sees it (normalised:
    ``onnxprune.normalize``).

    ``dims`` sets symbolic dimensions (by name) for the MAC count; unset ones count as 1.
    ``input_shapes`` overrides input shapes (name -> dims) for shape inference and MACs.
    """
    normalize = NormalizeModelPass(input_shapes)
    model = load_model(path)
    normalize(model)
    rows = _initializer_rows(model)
    prunable = [r for r in rows if r["prunable"]]
    prunable_elements = sum(r["elements"] for r in prunable)
    prunable_zeros = sum(round(r["sparsity"] * r["elements"]) for r in prunable)
    return {
        "model": str(path),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name or ''} {model.producer_version or ''}".strip(),
        "opsets": dict(sorted(model.opset_imports.items())),
        "external_data": uses_external_data(model),
        "inputs": _signature(
            [v for v in model.graph.inputs if v.name not in model.graph.initializers]
        ),
        "outputs": _signature(list(model.graph.outputs)),
        "normalized": {
            "constants_lifted": normalize.lifted,
            "subgraph_weights_moved": normalize.moved,
            "input_shapes": {k: list(v) for k, v in sorted((input_shapes or {}).items())},
        },
        "nodes": sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph)),
        "op_histogram": _op_histogram(model.graph),
        "parameters": {
            "elements": sum(r["elements"] for r in rows),
            "bytes": sum(r["bytes"] for r in rows),
            "prunable_elements": prunable_elements,
            "prunable_sparsity": prunable_zeros / prunable_elements if prunable_elements else 0.0,
        },
        "macs": count_macs(model, dims),
        "initializers": rows,
    }


def _shape(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def render_inspection(summary: dict) -> str:
    """The inspection as a readable terminal table."""
    params = summary["parameters"]
    opsets = ", ".join(f"{domain or 'ai.onnx'} {v}" for domain, v in summary["opsets"].items())
    lines = [
        f"{summary['model']}: IR {summary['ir_version']}, opsets {opsets}, "
        f"producer {summary['producer'] or '-'}, "
        f"external data {'yes' if summary['external_data'] else 'no'}",
    ]
    for kind in ("inputs", "outputs"):
        for io in summary[kind]:
            lines.append(f"  {kind[:-1]:<7} {io['name']}: {io['dtype']}{_shape(io['shape'])}")
    ops = ", ".join(f"{op} {count}" for op, count in summary["op_histogram"].items())
    lines.append(f"  {summary['nodes']} nodes: {ops}")
    lines.append(
        f"  parameters: {params['elements']:,} ({params['bytes'] / 1024:,.1f} KiB); prunable "
        f"{params['prunable_elements']:,} at {100 * params['prunable_sparsity']:.2f}% sparsity"
    )
    macs = summary["macs"]
    dims = ", ".join(f"{k}={v}" for k, v in macs["dims"].items()) or "all symbolic dims = 1"
    lines.append(f"  MACs per sample: {macs['total']:,} ({dims})")
    for layer in macs["layers"]:
        count = "unknown" if layer["macs"] is None else f"{layer['macs']:,}"
        lines.append(f"    {layer['node'][:60]:<60} {layer['op']:<8} {count:>14}")
    lines.append(f"  {'initializer':<40} {'shape':<16} {'elements':>10} {'sparsity':>9}  prunable")
    for row in summary["initializers"]:
        verdict = f"yes ({row['op']})" if row["prunable"] else f"no: {row['reason']}"
        shape = "x".join(str(d) for d in row["shape"]) or "scalar"
        lines.append(
            f"  {row['name'][:40]:<40} {shape:<16} {row['elements']:>10,} "
            f"{100 * row['sparsity']:>8.2f}%  {verdict}"
        )
    return "\n".join(lines)
