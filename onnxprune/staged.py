"""Run a big model a slice at a time, so onnxruntime never holds all of its weights at once.

The graph's nodes, in their stored topological order, are cut into consecutive slices of at
most ``slice_bytes`` of initializers each (a node with more gets a slice of its own). Each
slice becomes a sub-model whose inputs are the values it reads from earlier slices (or from
the graph's inputs) and whose outputs are the values later slices read, plus any tensors the
caller asks for. The sub-model refers to the original external data by location and offset;
onnxruntime gets the data files as memory maps (``add_external_initializers_from_files_in_
memory``) and copies only the slice's weights, so nothing is written to disk and the process
holds one slice of weights instead of the model.

Guarantees: every slice computes exactly the nodes of the original graph, so its outputs are
the original's up to onnxruntime's graph optimisations across slice borders (measured equal
on the synthetic stacks; compared within a tolerance in the tests). Graphs with subgraphs
(If/Loop/Scan) or with graph inputs that are also initializers are not sliced
(``plan_slices`` returns None).
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.data import Dataset
from onnxprune.errors import InputError, first_line
from onnxprune.runtime import run_feed

__all__ = [
    "SLICE_BYTES",
    "OnBatch",
    "Slice",
    "feed_of",
    "forget",
    "has_subgraphs",
    "initializer_bytes",
    "outputs_in_slices",
    "plan_slices",
    "slice_session",
]

logger = logging.getLogger(__name__)
OnBatch = Callable[[str, int, np.ndarray], None]  # (output name, first sample, values)
SLICE_BYTES = 256 << 20  # initializer bytes per slice when a big model is run whole


@dataclass(frozen=True)
class Slice:
    """Nodes ``start:stop`` of the graph, what they read from before and what later slices
    read from them (value names, in a stable order)."""

    start: int
    stop: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def initializer_bytes(model: ir.Model) -> int:
    """Bytes of the main graph's initializers (read from their metadata, not their data)."""
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value)


def has_subgraphs(model: ir.Model) -> bool:
    """Whether a main-graph node carries a graph attribute (an ``If``/``Loop``/``Scan`` body)."""
    return any(
        attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
        for node in model.graph
        for attr in node.attributes.values()
    )


def _sliceable(model: ir.Model) -> bool:
    if any(v.name in model.graph.initializers for v in model.graph.inputs):
        return False
    return not has_subgraphs(model)


def _cuts(model: ir.Model, slice_bytes: int) -> list[tuple[int, int]]:
    """Node ranges of at most ``slice_bytes`` initializer bytes each (at least one node)."""
    initializers = model.graph.initializers
    ranges, start, used = [], 0, 0
    for index, node in enumerate(model.graph):
        names = {v.name for v in node.inputs if v is not None and v.name in initializers}
        cost = sum(initializers[n].const_value.nbytes for n in names)
        if cost and used + cost > slice_bytes and index > start:
            ranges.append((start, index))
            start, used = index, 0
        used += cost
    ranges.append((start, len(model.graph)))
    return ranges


def plan_slices(model: ir.Model, slice_bytes: int) -> list[Slice] | None:
    """The graph cut into slices, or None when it cannot be sliced (see the module doc)."""
    if not _sliceable(model):
        return None
    ranges = _cuts(model, slice_bytes)
    slice_of_node = {}
    for number, (start, stop) in enumerate(ranges):
        for node in list(model.graph)[start:stop]:
            slice_of_node[id(node)] = number
    reads: list[dict[str, None]] = [{} for _ in ranges]  # ordered sets
    for node in model.graph:
        here = slice_of_node[id(node)]
        for value in node.inputs:
            if value is None or value.name in model.graph.initializers:
                continue
            producer = value.producer()
            if producer is None or slice_of_node[id(producer)] != here:
                reads[here][value.name] = None
    produced_in = {
        out.name: slice_of_node[id(node)] for node in model.graph for out in node.outputs
    }
    writes: list[dict[str, None]] = [{} for _ in ranges]
    for number, names in enumerate(reads):
        for name in names:
            if name in produced_in and produced_in[name] != number:
                writes[produced_in[name]][name] = None
    return [
        Slice(start, stop, tuple(reads[n]), tuple(writes[n]))
        for n, (start, stop) in enumerate(ranges)
    ]


def _sub_model(model: ir.Model, piece: Slice, dtypes: dict[str, np.dtype], extra: list[str]):
    """A copy of the model holding only the slice's nodes and initializers (tensors shared)."""
    sub = model.clone()
    graph = sub.graph
    nodes = list(graph)
    kept = nodes[piece.start : piece.stop]
    fresh = {
        name: ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(dtypes[name])))
        for name in piece.inputs
    }
    produced = {}
    for node in kept:
        for index, value in enumerate(node.inputs):
            if value is not None and value.name in fresh:
                node.replace_input_with(index, fresh[value.name])
        produced.update((out.name, out) for out in node.outputs)
    graph.outputs.clear()
    graph.inputs.clear()
    graph.remove(nodes[: piece.start] + nodes[piece.stop :], safe=False)
    graph.inputs.extend(fresh.values())
    for name in dict.fromkeys([*piece.outputs, *extra]):
        graph.outputs.append(produced[name])  # untyped: onnxruntime infers the type
    for name, value in list(graph.initializers.items()):
        if not value.uses():
            del graph.initializers[name]
    return sub


def _data_files(sub: ir.Model) -> dict[str, Path] | None:
    """location -> file of the external data the sub-model reads; None if two files share a
    location name (they could not be told apart by onnxruntime)."""
    files: dict[str, Path] = {}
    for value in sub.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            path = Path(tensor.base_dir) / tensor.location
            if files.setdefault(tensor.location, path) != path:
                return None
    return files


def slice_session(
    model: ir.Model,
    piece: Slice,
    dtypes: dict[str, np.dtype],
    extra: list[str],
    folder: Path,
    threads: int = 0,
) -> ort.InferenceSession:
    """An onnxruntime session of one slice whose outputs are ``piece.outputs`` and ``extra``
    (values produced in the slice); ``dtypes`` gives the numpy dtype of each slice input."""
    sub = _sub_model(model, piece, dtypes, extra)
    path = folder / f"slice{piece.start}.onnx"
    ir.save(sub, path)  # external tensors keep their location and offset: no data is written
    files = _data_files(sub)
    if files is None:
        raise InputError("cannot slice a model whose external data files share a name")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    # A slice runs a few batches: packing its weights up front costs a second copy of them
    # (170 MB less at 500 MB, same CPU time, measured) for little gain.
    options.add_session_config_entry("session.disable_prepacking", "1")
    maps, views = [], []
    try:
        for file in files.values():
            with open(file, "rb") as handle:
                maps.append(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
            views.append(memoryview(maps[-1]))
        if maps:
            options.add_external_initializers_from_files_in_memory(
                list(files), views, [len(m) for m in maps]
            )
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        message = first_line(error)
        raise InputError(f"onnxruntime cannot load slice {piece.start}: {message}") from error
    finally:
        path.unlink(missing_ok=True)
        for view in views:
            view.release()
        for mapped in maps:
            mapped.close()


def outputs_in_slices(
    model: ir.Model,
    dataset: Dataset,
    batch: int,
    names: list[str],
    folder: Path,
    threads: int = 0,
    on_batch: OnBatch | None = None,
) -> dict[str, np.ndarray] | None:
    """The graph outputs ``names`` over every sample, the model run a slice of at most
    ``SLICE_BYTES`` of weights at a time (batches of ``batch``, concatenated along axis 0 as
    ``runtime.run_dataset`` does); None when the graph cannot be sliced.

    With ``on_batch``, each batch of each output is handed to ``on_batch(name, start,
    values)`` as soon as its slice has run, in sample order per output, and not kept (the
    result is then empty)."""
    slices = plan_slices(model, SLICE_BYTES)
    produced = {out.name for node in model.graph for out in node.outputs}
    if slices is None or not set(names) <= produced:
        return None
    live = [dataset.slice(s, s + batch) for s in range(0, dataset.samples, batch)]
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in names}
    nodes = list(model.graph)
    for number, piece in enumerate(slices):
        here = {out.name for node in nodes[piece.start : piece.stop] for out in node.outputs}
        wanted = [name for name in names if name in here]
        fetch = list(dict.fromkeys([*piece.outputs, *wanted]))
        dtypes = {name: live[0][name].dtype for name in piece.inputs}
        session = slice_session(model, piece, dtypes, wanted, folder, threads)
        for index, feed in enumerate(live):
            ran = run_feed(session, fetch, feed_of(feed, piece), index * batch)
            results = dict(zip(fetch, ran, strict=True))
            feed.update((name, results[name]) for name in piece.outputs)
            for name in wanted:
                if on_batch is None:
                    pieces[name].append(results[name])
                else:
                    on_batch(name, index * batch, results[name])
        del session
        forget(live, slices, number)
    if on_batch is not None:
        return {}
    return {name: np.concatenate(parts, axis=0) for name, parts in pieces.items()}


def forget(live: list[dict], slices: list[Slice], number: int) -> None:
    """Drop from every batch the values no slice after ``number`` reads (inputs stay)."""
    last_read = {name: n for n, piece in enumerate(slices) for name in piece.inputs}
    for feed in live:
        for name in [n for n in feed if last_read.get(n, len(slices)) <= number]:
            del feed[name]


def feed_of(feed: dict[str, np.ndarray], piece: Slice) -> dict[str, np.ndarray]:
    """The part of a batch's values that ``piece`` reads."""
    return {name: feed[name] for name in piece.inputs}
