"""Walk an attention block from its ``MatMul(probabilities, V)`` and record where the heads go.

``trace_attention`` follows the three inputs of scaled dot-product attention back to their
projections and the context forward to the output projection, marking on the way every tensor
whose size follows the heads (``HeadPath.axes``: which axis carries them), every Reshape/Expand
whose target shape must agree (``HeadPath.checks``), and every operand that must broadcast over
the heads (``HeadPath.sides``). It understands what the TorchScript and dynamo exporters write
for eager and SDPA attention: heads split by ``Reshape`` after ``MatMul [+ bias]``, transposes
(also the dynamo ``Reshape -> Transpose(0, 2, 1) -> Reshape`` of K), scalar scaling of Q, K or
the scores, rotary embeddings (elementwise with per-position tables, ``Slice``/``Neg``/``Concat``
along the head size), grouped-query repeats (``Unsqueeze -> Expand -> Reshape``), additive or
``Where`` masks, ``Softmax`` on the last axis and ``Where(IsNaN(p), 0, p)``. Anything else raises
``Refused`` with the reason; ``heads.py`` checks the recorded shapes and uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from onnxprune.structured.shapes import Dim, Lit, constant_tensor, shape_terms

__all__ = ["HeadPath", "Projection", "Refused", "trace_attention"]

_PASS = ("Identity", "Dropout", "Cast", "Neg")
_BINARY = ("Mul", "Div", "Add", "Sub")


class Refused(Exception):
    """The block cannot be pruned by heads; the message says why and where."""

    def __init__(self, reason: str, node: ir.Node | None = None) -> None:
        where = f" (at {node.op_type} '{node.name}')" if node is not None else ""
        super().__init__(reason + where)


@dataclass
class Projection:
    """``MatMul(x, weight) [+ bias]`` split into heads by ``split``."""

    matmul: ir.Node
    weight: ir.Value
    bias: ir.Value | None
    split: ir.Node
    heads: int
    head_dim: int


@dataclass
class HeadPath:
    """What depends on the heads. ``axes``: value -> (axis, key, elements per head), key ``q``
    for query-head counts, ``kv`` for key/value-head counts, None where heads and batch merge."""

    axes: dict = field(default_factory=dict)
    nodes: set = field(default_factory=set)
    checks: list = field(default_factory=list)  # (node, position, key, elements per head)
    sides: list = field(default_factory=list)
    repeat: dict = field(default_factory=dict)  # Expand node -> query heads per key/value head


def _rank(value: ir.Value) -> int:
    if value.shape is None:
        raise Refused(f"tensor '{value.name}' has no known rank", value.producer())
    return len(value.shape)


def _perm(node: ir.Node) -> list[int]:
    return list(node.attributes.get_ints("perm", range(_rank(node.inputs[0]))[::-1]))


class _Tracer:
    def __init__(self) -> None:
        self.path = HeadPath()
        self.memo: dict = {}

    def mark(self, value: ir.Value, axis: int, key: str | None, elements: int = 1) -> None:
        self.path.axes[value] = (axis, key, elements)

    def back(self, value: ir.Value, axis: int, key: str) -> Projection:
        """The projection that the heads on ``axis`` of ``value`` come from."""
        if (value, axis) not in self.memo:
            self.mark(value, axis, key)
            self.memo[(value, axis)] = self._back(value, axis, key)
        return self.memo[(value, axis)]

    def _back(self, value: ir.Value, axis: int, key: str) -> Projection:
        node = value.producer()
        if node is None:
            raise Refused(f"the heads of '{value.name}' come from a graph input or constant")
        self.path.nodes.add(node)
        op = node.op_type
        if op in _PASS:
            return self.back(node.inputs[0], axis, key)
        if op == "Transpose":
            return self.back(node.inputs[0], _perm(node)[axis], key)
        if op in _BINARY:
            return self._binary(node, axis, key)
        if op in ("Slice", "Concat"):
            return self._along_head_size(node, axis, key)
        if op == "Reshape":
            return self._reshape(node, axis, key)
        raise Refused(f"{op} on the path of the heads is not supported", node)

    def _converge(self, node: ir.Node, found: list[Projection]) -> Projection:
        if not found or any(p.split is not found[0].split for p in found):
            raise Refused("operands come from different projections", node)
        return found[0]

    def _binary(self, node: ir.Node, axis: int, key: str) -> Projection:
        out_rank, found = _rank(node.outputs[0]), []
        for operand in node.inputs:
            local = axis - (out_rank - _rank(operand))
            size = operand.shape[local] if local >= 0 else 1
            if constant_tensor(operand) is not None:
                if size != 1:
                    raise Refused(f"constant '{operand.name}' differs per head", node)
            elif size == 1:
                self.path.sides.append(operand)
            else:
                found.append(self.back(operand, local, key))
        return self._converge(node, found)

    def _along_head_size(self, node: ir.Node, axis: int, key: str) -> Projection:
        rank = _rank(node.outputs[0])
        if node.op_type == "Concat":
            if node.attributes.get_int("axis", 0) % rank == axis:
                raise Refused("Concat along the heads axis", node)
            return self._converge(node, [self.back(v, axis, key) for v in node.inputs])
        axes = constant_tensor(node.inputs[3]) if len(node.inputs) > 3 else None
        if axes is None or axis in {int(a) % rank for a in axes.numpy().ravel()}:
            raise Refused("Slice over the heads axis (or over unknown axes)", node)
        return self.back(node.inputs[0], axis, key)

    def _reshape(self, node: ir.Node, axis: int, key: str) -> Projection:
        source = node.inputs[0]
        ranks = (_rank(source), _rank(node.outputs[0]))
        if ranks == (3, 4) and axis == 2:
            return self._projection(node, key)
        if ranks == (5, 4):
            return self._repeat(node, axis, key)
        if ranks == (3, 4) and axis == 1:
            return self._key_transpose(node, key)
        if ranks == (4, 4):
            self.path.checks.append((node, axis, key, 1))
            return self.back(source, axis, key)
        raise Refused(f"Reshape from rank {ranks[0]} to {ranks[1]} moves the heads", node)

    def _projection(self, split: ir.Node, key: str) -> Projection:
        head_dim = split.outputs[0].shape[3]
        if not isinstance(head_dim, int):
            raise Refused("the head size is not known", split)
        self.path.checks.append((split, 2, key, 1))
        value = split.inputs[0]
        self.mark(value, 2, key, head_dim)
        node, bias = value.producer(), None
        if node is not None and node.op_type == "Add":
            constants = [v for v in node.inputs if constant_tensor(v) is not None]
            if len(constants) != 1 or constants[0].shape is None or len(constants[0].shape) != 1:
                raise Refused("the projection's bias is not one 1-D constant", node)
            bias = constants[0]
            self.path.nodes.add(node)
            value = next(v for v in node.inputs if v is not bias)
            self.mark(value, 2, key, head_dim)
            node = value.producer()
        if node is None or node.op_type != "MatMul" or constant_tensor(node.inputs[1]) is None:
            raise Refused(f"'{value.name}' is not a projection by a constant weight", split)
        weight = node.inputs[1]
        if weight.shape is None or len(weight.shape) != 2 or weight.shape[1] % head_dim:
            raise Refused(f"weight '{weight.name}' does not split into heads of {head_dim}", node)
        self.path.nodes.add(node)
        heads = weight.shape[1] // head_dim
        return Projection(node, weight, bias, split, heads, head_dim)

    def _repeat(self, merge: ir.Node, axis: int, key: str) -> Projection:
        """``Unsqueeze(x, axis + 1) -> Expand -> Reshape``: each head of x used ``n`` times."""
        expand = merge.inputs[0].producer()
        unsqueeze = expand.inputs[0].producer() if expand and expand.op_type == "Expand" else None
        axes = (
            constant_tensor(unsqueeze.inputs[1])
            if unsqueeze is not None and unsqueeze.op_type == "Unsqueeze"
            else None
        )
        if key != "q" or axes is None or axes.numpy().ravel().tolist() != [axis + 1]:
            raise Refused("Reshape from rank 5 is not a key/value head repeat", merge)
        repeat = expand.outputs[0].shape[axis + 1] if expand.outputs[0].shape else None
        terms = shape_terms(expand)
        if not isinstance(repeat, int) and terms and isinstance(terms[axis + 1], Lit):
            repeat = terms[axis + 1].value
        if not isinstance(repeat, int) or repeat < 1:
            raise Refused("the number of query heads per key/value head is not known", expand)
        self.path.nodes |= {expand, unsqueeze}
        self.path.repeat[expand] = repeat
        self.path.checks += [(merge, axis, "q", 1), (expand, axis, "kv", 1)]
        self.mark(merge.inputs[0], axis, "kv")
        self.mark(unsqueeze.outputs[0], axis, "kv")
        return self.back(unsqueeze.inputs[0], axis, "kv")

    def _key_transpose(self, outer: ir.Node, key: str) -> Projection:
        """``Reshape(x, [-1, S, D]) -> Transpose(0, 2, 1) -> Reshape([B, H, D, S])`` of K."""
        transpose = outer.inputs[0].producer()
        inner = transpose.inputs[0].producer() if transpose is not None else None
        if transpose.op_type != "Transpose" or _perm(transpose) != [0, 2, 1] or inner is None:
            raise Refused("Reshape from rank 3 to 4 is not a transpose of K", outer)
        source = inner.inputs[0]
        if inner.op_type != "Reshape" or _rank(source) != 4:
            raise Refused("Reshape from rank 3 to 4 is not a transpose of K", outer)
        expected = {"inner": [None, 2, 3], "outer": [0, 1, 3, 2]}
        for node, axes in ((inner, expected["inner"]), (outer, expected["outer"])):
            terms = shape_terms(node)
            ok = terms is not None and len(terms) == len(axes)
            for term, want in zip(terms or [], axes, strict=False):
                if want is None:
                    ok = ok and isinstance(term, Lit) and term.value == -1
                else:
                    ok = ok and isinstance(term, Dim) and term.source is source
                    ok = ok and term.axis == want and term.factor == 1
            if not ok:
                raise Refused("cannot prove that this Reshape only transposes K", node)
        self.path.nodes |= {transpose, inner}
        self.path.checks.append((outer, 1, key, 1))
        self.mark(inner.outputs[0], 0, None)
        self.mark(transpose.outputs[0], 0, None)
        return self.back(source, 1, key)


def _is_scores(value: ir.Value, depth: int = 6) -> bool:
    """Whether ``value`` is computed from ``MatMul(Q, Kᵀ)`` through scaling and masking."""
    node = value.producer()
    if node is None or depth == 0:
        return False
    if node.op_type == "MatMul":
        return all(constant_tensor(v) is None for v in node.inputs)
    if node.op_type not in (*_PASS, *_BINARY, "Where", "Softmax"):
        return False
    live = [v for v in node.inputs if v is not None and constant_tensor(v) is None]
    if node.op_type == "Where":
        live = [v for v in live if v is not node.inputs[0]]
    return any(_is_scores(v, depth - 1) for v in live)


def _probabilities(tracer: _Tracer, value: ir.Value) -> ir.Node:
    """Walk from the probabilities to ``MatMul(Q, Kᵀ)``; masks must broadcast over heads."""
    softmax = 0
    node = value.producer()
    while node is not None:
        tracer.path.nodes.add(node)
        tracer.mark(node.outputs[0], 1, "q")
        if node.op_type == "MatMul":
            if softmax != 1:
                raise Refused(f"{softmax} Softmax between the scores and the context", node)
            return node
        if node.op_type == "Softmax":
            softmax += 1
            if node.attributes.get_int("axis", -1) not in (-1, 3):
                raise Refused("Softmax is not over the last axis", node)
            node = node.inputs[0].producer()
            continue
        if node.op_type not in (*_PASS, *_BINARY, "Where"):
            raise Refused(f"{node.op_type} between the scores and the context", node)
        main = [v for v in node.inputs if v is not None and _is_scores(v)]
        if len(main) != 1:
            raise Refused("cannot tell the scores from the mask", node)
        for operand in node.inputs:
            if operand is not None and operand is not main[0]:
                _side(tracer, node, operand)
        node = main[0].producer()
    raise Refused(f"'{value.name}' is not computed from attention scores")


def _side(tracer: _Tracer, node: ir.Node, operand: ir.Value) -> None:
    producer = operand.producer()
    if producer is not None and producer.op_type == "IsNaN":
        tracer.path.nodes.add(producer)
        return
    local = 1 - (4 - _rank(operand))
    size = operand.shape[local] if local >= 0 else 1
    if isinstance(size, int) and size != 1:
        raise Refused(f"operand '{operand.name}' differs per head", node)
    if constant_tensor(operand) is None:
        tracer.path.sides.append(operand)


def trace_attention(context: ir.Node) -> tuple[HeadPath, dict[str, Projection]]:
    """Trace the block whose ``MatMul(probabilities, V)`` is ``context`` (see the docstring)."""
    tracer = _Tracer()
    tracer.path.nodes.add(context)
    tracer.mark(context.outputs[0], 1, "q")
    if _rank(context.outputs[0]) != 4:
        raise Refused("attention is not computed per head in 4-D tensors", context)
    scores = _probabilities(tracer, context.inputs[0])
    projections = {
        "query": tracer.back(scores.inputs[0], 1, "q"),
        "key": tracer.back(scores.inputs[1], 1, "q"),
        "value": tracer.back(context.inputs[1], 1, "q"),
    }
    return tracer.path, projections
