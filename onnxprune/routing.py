"""How Concat, Split and Slice route positions along one axis, for the op table.

A routing rule answers, for a node and the axis that carries channels: which positions of which
input appear at which positions of which output (``Route``), and which integers of the node
count positions on that axis (``CountSite``: Split sizes, Slice starts/ends) so that they can be
rewritten when positions are removed. Negative axes and indices are normalised by rank and
size; the rules know the opset forms (Split's ``split`` is an attribute before opset 13 and an
input from 13, ``num_outputs`` from 18; Slice's starts/ends are attributes before opset 10).
A rule returns a reason (a string) for anything it cannot describe exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx_ir as ir

__all__ = [
    "CountSite",
    "Route",
    "Routing",
    "RoutingRule",
    "concat_routing",
    "constant_ints",
    "slice_routing",
    "split_routing",
]


@dataclass(frozen=True)
class Route:
    """Positions ``[start, stop)`` of input ``source`` are output ``target``'s from ``offset``."""

    source: int
    start: int
    stop: int
    target: int
    offset: int


@dataclass(frozen=True)
class CountSite:
    """Entry ``position`` of an integer list that counts positions ``[start, stop)`` of input
    ``source``: it loses one for each of those positions removed.

    The list is input ``input`` (a constant; written as a new one, created when absent) or
    attribute ``attribute`` (a single int when ``scalar``); ``base`` holds its values before
    pruning, normalised; ``drop`` names an attribute to remove when the list is written.
    """

    position: int
    base: tuple[int, ...]
    start: int
    stop: int
    source: int = 0
    input: int | None = None
    attribute: str | None = None
    drop: str | None = None
    scalar: bool = False
    created: bool = False

    @property
    def location(self) -> tuple[int | None, str | None]:
        return self.input, self.attribute


@dataclass(frozen=True)
class Routing:
    """Every route of a node along one axis, and the integers that count positions on it."""

    routes: tuple[Route, ...]
    counts: tuple[CountSite, ...] = ()


# A routing rule takes the node, the channel axis (non-negative) and the model's opset.
RoutingRule = Callable[[ir.Node, int, int], "Routing | str"]


def _static(value: ir.Value | None, axis: int) -> int | None:
    shape = None if value is None else value.shape
    if shape is None or axis >= len(shape) or not isinstance(shape[axis], int):
        return None
    return shape[axis]


def _axis(attribute: int, rank: int) -> int:
    return attribute + rank if attribute < 0 else attribute


def constant_ints(value: ir.Value) -> np.ndarray | None:
    """The integers held by an initializer or a ``Constant`` node's output, else None."""
    if value.const_value is not None:
        return value.const_value.numpy()
    node = value.producer()
    if node is None or node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    if "value" in node.attributes:
        return node.attributes["value"].value.numpy()
    if "value_ints" in node.attributes:
        return np.array(node.attributes.get_ints("value_ints"), dtype=np.int64)
    if "value_int" in node.attributes:
        return np.array(node.attributes.get_int("value_int"), dtype=np.int64)
    return None


def _ints(node: ir.Node, index: int, attribute: str) -> tuple[list[int] | None, str | None]:
    """An integer list given as input ``index`` (opsets that take it as an input) or attribute:
    ``(values, where)``, ``(None, None)`` when absent, ``(None, reason)`` when computed."""
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is not None:
        values = constant_ints(value)
        if values is None:
            return None, f"'{value.name}' is computed, not a constant"
        return [int(v) for v in values.ravel()], "input"
    if attribute in node.attributes:
        return list(node.attributes.get_ints(attribute)), "attribute"
    return None, None


def concat_routing(node: ir.Node, axis: int, opset: int) -> Routing | str:
    """Input i's positions follow the inputs before it along the concatenation axis."""
    shapes = [v.shape for v in (node.outputs[0], *node.inputs) if v is not None and v.shape]
    if not shapes:
        return "ranks unknown (shape inference failed)"
    rank = len(shapes[0])
    joined = _axis(node.attributes.get_int("axis", 1), rank)  # optional (default 1) before 4
    if joined != axis:
        return f"joins tensors on axis {joined}, the channels are on axis {axis}"
    routes, offset = [], 0
    for index, value in enumerate(node.inputs):
        size = _static(value, axis)
        if size is None:
            return f"input {index} ('{value.name}') has no static channel count"
        routes.append(Route(index, 0, size, 0, offset))
        offset += size
    return Routing(tuple(routes))


def _split_sizes(node: ir.Node, size: int, opset: int) -> tuple[list[int], CountSite] | str:
    """Part sizes and where they are written (an explicit ``split`` replaces an equal split)."""
    sizes, where = _ints(node, 1, "split")  # opset 1 and >= 13: input; 2-12: attribute
    if sizes is None and where is not None:
        return f"split sizes {where}"
    created = sizes is None
    if created:  # equal parts: num_outputs (opset >= 18) or one per output
        parts = node.attributes.get_int("num_outputs", len(node.outputs))
        chunk = -(-size // parts)
        sizes = [chunk] * (parts - 1) + [size - chunk * (parts - 1)]
        where = "input" if opset >= 13 else "attribute"
    if len(sizes) != len(node.outputs) or sum(sizes) != size or min(sizes) < 0:
        return f"split sizes {sizes} do not divide {size} channels into {len(node.outputs)}"
    drop = "num_outputs" if "num_outputs" in node.attributes else None
    location = {"input": 1, "drop": drop} if where == "input" else {"attribute": "split"}
    return sizes, CountSite(0, tuple(sizes), 0, 0, created=created, **location)


def split_routing(node: ir.Node, axis: int, opset: int) -> Routing | str:
    """Part k gets the positions after parts 0..k-1; each part size counts its positions."""
    data = node.inputs[0]
    if data.shape is None:
        return "input rank unknown (shape inference failed)"
    split_axis = _axis(node.attributes.get_int("axis", 0), len(data.shape))
    size = _static(data, axis)
    if size is None:
        return "no static channel count"
    if split_axis != axis:  # every part keeps all channels
        return Routing(tuple(Route(0, 0, size, k, 0) for k in range(len(node.outputs))))
    found = _split_sizes(node, size, opset)
    if isinstance(found, str):
        return found
    sizes, site = found
    routes, counts, start = [], [], 0
    for part, part_size in enumerate(sizes):
        stop = start + part_size
        routes.append(Route(0, start, stop, part, 0))
        counts.append(replace(site, position=part, start=start, stop=stop))
        start = stop
    return Routing(tuple(routes), tuple(counts))


def _clamped(index: int, size: int) -> int:
    """A Slice start or end (positive step) as a position in ``[0, size]``."""
    return min(max(index + size if index < 0 else index, 0), size)


def _slice_bounds(node: ir.Node, opset: int) -> tuple[dict, str] | str:
    """``{"starts": [...], "ends": [...], "axes": [...]|None, "steps": [...]|None}`` and where
    starts/ends live (``input`` from opset 10, ``attribute`` before)."""
    found, where = {}, None
    for index, name in enumerate(("starts", "ends", "axes", "steps"), start=1):
        values, found_where = _ints(node, index, name) if opset >= 10 else (None, None)
        if opset < 10 and name in node.attributes:
            values, found_where = list(node.attributes.get_ints(name)), "attribute"
        if values is None and found_where is not None:
            return f"{name} {found_where}"
        found[name] = values
        where = where or found_where
    if found["starts"] is None or found["ends"] is None:
        return "starts or ends missing"
    return found, where


def slice_routing(node: ir.Node, axis: int, opset: int) -> Routing | str:
    """Positions [start, end) go to the output from 0 on; start and end count the positions
    before them (an end past the last channel stays as it is)."""
    data = node.inputs[0]
    size = _static(data, axis)
    if size is None or data.shape is None:
        return "no static channel count"
    found = _slice_bounds(node, opset)
    if isinstance(found, str):
        return found
    bounds, where = found
    axes = [_axis(a, len(data.shape)) for a in (bounds["axes"] or range(len(bounds["starts"])))]
    if axis not in axes:
        return Routing((Route(0, 0, size, 0, 0),))
    entry = axes.index(axis)
    step = bounds["steps"][entry] if bounds["steps"] else 1
    if step != 1:
        return f"step {step} on the channel axis"
    start, end = (_clamped(bounds[k][entry], size) for k in ("starts", "ends"))
    if end <= start:
        return "selects no channel"
    counts = []
    for index, name, value in ((1, "starts", start), (2, "ends", end)):
        if 0 < value < size:  # 0 and an end past the last channel stay valid as they are
            base = list(bounds[name])
            base[entry] = value
            location = {"input": index} if where == "input" else {"attribute": name}
            counts.append(CountSite(entry, tuple(base), 0, value, **location))
    return Routing((Route(0, start, end, 0, 0),), tuple(counts))
