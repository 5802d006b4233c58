"""One normalising step after loading, so every command sees the same model.

Exporters write the same network in different ways: Paddle2ONNX and older torch exports keep
weights in ``Constant`` nodes, voice models keep theirs inside ``If`` branches, some files have
unnamed nodes, and input dims come as symbols, ``-1`` or nothing. ``NormalizeModelPass`` turns
all of them into one form that ``inspect``, ``prune``, ``quantize`` and ``compress`` share.

Guarantees (the model computes the same function, outputs and inputs keep their names):

* tensors held by ``Constant`` nodes (2 elements or more, in any graph) become initializers;
* initializers of subgraphs (``If``/``Loop``/``Scan`` bodies) move to the main graph (renamed
  only on a name clash), so every weight is in one place and reachable by name;
* every node and value has a unique name;
* an input dim written as a negative number (``-1``) becomes an unnamed symbolic dim;
* input shape overrides (``input_shapes``: name -> dims) replace the dims of those inputs; an
  override that contradicts a static dim or the rank is refused;
* shapes are inferred (ONNX shape inference with data propagation, non-strict: what cannot be
  inferred stays unknown and is logged, never an error).

``load_normalized`` loads (``model_io.load_model``: validated) and normalises in one call.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import onnx_ir as ir
from onnx_ir.passes.common import (
    LiftConstantsToInitializersPass,
    LiftSubgraphInitializersToMainGraphPass,
    NameFixPass,
    ShapeInferencePass,
)

from onnxprune.errors import InputError
from onnxprune.model_io import load_model

__all__ = [
    "InputShapes",
    "NormalizeModelPass",
    "load_normalized",
    "parse_input_shape",
    "symbolic_dim_names",
]

logger = logging.getLogger(__name__)

InputShapes = Mapping[str, tuple[int, ...]]

# Constant tensors of at least this many elements become initializers: Paddle2ONNX writes
# per-channel biases of 8 channels as Constant nodes; scalars stay where they are.
LIFT_MIN_ELEMENTS = 2

_INPUT_SHAPE = re.compile(r"^(?P<name>.+):(?P<dims>\d+(,\d+)*)?$")


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME:d0,d1,...`` (``NAME:`` alone is a 0-d scalar input)."""
    match = _INPUT_SHAPE.match(text.strip())
    if not match:
        raise InputError(
            f"input shape '{text}' is not NAME:d0,d1,... of whole numbers (e.g. x:1,3,224,224)"
        )
    dims = match.group("dims")
    return match.group("name"), tuple(int(d) for d in dims.split(",")) if dims else ()


def _dims_text(shape: ir.Shape | None) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d.value or "?") for d in shape) + "]"


def _override(value: ir.Value, dims: tuple[int, ...]) -> None:
    shape = value.shape
    if shape is not None and len(shape) != len(dims):
        raise InputError(
            f"--input-shape {value.name}: {len(dims)} dims given, the model's input has rank "
            f"{len(shape)} {_dims_text(shape)}"
        )
    for axis, dim in enumerate(dims):
        declared = shape[axis] if shape is not None else None
        if isinstance(declared, int) and declared >= 0 and declared != dim:
            raise InputError(
                f"--input-shape {value.name}: axis {axis} is {dim}, the model fixes it at "
                f"{declared} {_dims_text(shape)}"
            )
    value.shape = ir.Shape(list(dims))


def _negative_dims_to_symbols(value: ir.Value) -> bool:
    if value.shape is None or not any(isinstance(d, int) and d < 0 for d in value.shape):
        return False
    value.shape = ir.Shape([None if isinstance(d, int) and d < 0 else d for d in value.shape])
    return True


def symbolic_dim_names(model: ir.Model) -> set[str]:
    """Names of the symbolic dims of the model's inputs."""
    return {
        dim.value
        for value in model.graph.inputs
        if value.shape is not None
        for dim in value.shape
        if not isinstance(dim, int) and dim.value
    }


def _infer_shapes(model: ir.Model) -> None:
    """Non-strict ONNX shape inference with data propagation, merged into ``model``; the
    initializers keep their order (the pass re-registers them)."""
    order = list(model.graph.initializers)
    ShapeInferencePass(strict_mode=False, data_prop=True)(model)
    if list(model.graph.initializers) != order:
        values = [model.graph.initializers.pop(name) for name in order]
        for value in values:
            model.graph.register_initializer(value)


class NormalizeModelPass(ir.passes.InPlacePass):
    """See the module docstring. ``lifted`` counts constants lifted; ``moved`` subgraph weights."""

    def __init__(self, input_shapes: InputShapes | None = None, infer_shapes: bool = True):
        super().__init__()
        self.input_shapes = dict(input_shapes or {})
        self.infer_shapes = infer_shapes
        self.lifted = 0
        self.moved = 0

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = len(model.graph.initializers)
        lifted = LiftConstantsToInitializersPass(size_limit=LIFT_MIN_ELEMENTS)(model).modified
        subgraph_weights = sum(
            len(graph.initializers) for graph in model.graphs() if graph is not model.graph
        )
        moved = LiftSubgraphInitializersToMainGraphPass()(model).modified
        self.moved = subgraph_weights if moved else 0
        self.lifted = len(model.graph.initializers) - before - self.moved if lifted else 0
        NameFixPass()(model)
        inputs = {value.name: value for value in model.graph.inputs}
        unknown = sorted(set(self.input_shapes) - set(inputs))
        if unknown:
            raise InputError(
                f"--input-shape names no model input: {', '.join(unknown)} "
                f"(inputs: {', '.join(sorted(inputs))})"
            )
        for name, dims in sorted(self.input_shapes.items()):
            _override(inputs[name], dims)
        for value in model.graph.inputs:
            _negative_dims_to_symbols(value)
        if self.infer_shapes:
            _infer_shapes(model)
        return ir.passes.PassResult(model, modified=True)


def load_normalized(
    path: str | os.PathLike, input_shapes: InputShapes | None = None, infer_shapes: bool = True
) -> ir.Model:
    """Load the model at ``path`` (validated) and normalise it (``NormalizeModelPass``)."""
    model = load_model(path)
    NormalizeModelPass(input_shapes, infer_shapes)(model)
    return model
