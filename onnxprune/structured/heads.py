"""Find attention heads in exported transformer graphs, or say why a block cannot lose heads.

Every ``MatMul`` of two computed tensors whose first input comes from a ``Softmax`` is a
candidate (the ``MatMul(probabilities, V)`` of an attention block). ``attention.py`` traces it
back to the Q, K and V projections and forward to the output projection; ``head_checks.py``
proves that the shapes and uses stay consistent when heads go. A head (with grouped-query
attention: a key/value head together with the query heads that share it) is then ``head_dim``
consecutive columns of W_q, W_k, W_v (and their biases) and the matching rows of W_out. Literal
head counts and hidden sizes in Reshape/Expand shapes are rewritten; sizes read at run time
from ``Shape`` are left as they are, once proven to follow the heads. A candidate that fails is
returned as a blocked group whose reason names the node where matching stopped.

Why a hand matcher and not onnxscript's ``rewriter/ort_fusions/sdpa.py`` pattern: that pattern
describes only the core (scaled ``MatMul(Q, Kᵀ)``, mask, ``Softmax``, ``Where(IsNaN)``,
``MatMul(·, V)``), which is the easy part; it does not match the TorchScript export as written
(its ``Where(IsNaN(p), 0, p)`` holds the 0 in a shape-[1] constant, refused with "is not a
scalar, expecting 0.0"), and a failed ``OrValue`` alternative reports only "OrValue pattern does
not match value". What decides whether heads can go lies outside it: projections, rotary
embeddings, key/value repeats, ``Shape -> Gather -> Concat`` chains and who else reads each
tensor. The matcher follows the same alternatives as onnxscript's pattern (three ways to
transpose K, scaling of Q, K or the scores, optional mask and NaN guard) and, like
``MatchResult.fail(reason, node)``, every refusal carries its reason and node.
"""

from __future__ import annotations

import logging

import onnx_ir as ir

from onnxprune.structured.attention import HeadPath, Projection, Refused, trace_attention
from onnxprune.structured.groups import ChannelGroup, TensorSlice
from onnxprune.structured.head_checks import check_head_path
from onnxprune.structured.shapes import constant_tensor

__all__ = [
    "constant_tensor",
    "find_head_groups",
    "unshare_projection_biases",
    "unshare_shape_concats",
]

logger = logging.getLogger(__name__)
_PASS = ("Identity", "Dropout", "Cast")


def _from_softmax(value: ir.Value) -> bool:
    node = value.producer()
    while node is not None and (node.op_type in _PASS or node.op_type == "Where"):
        if node.op_type == "Where":
            value = node.inputs[2]
            guard = node.inputs[0].producer()
            if guard is None or guard.op_type != "IsNaN":
                return False
        else:
            value = node.inputs[0]
        node = value.producer()
    return node is not None and node.op_type == "Softmax"


def _is_candidate(node: ir.Node) -> bool:
    if node.op_type != "MatMul" or len(node.inputs) != 2:
        return False
    if any(v is None or constant_tensor(v) is not None for v in node.inputs):
        return False
    return _from_softmax(node.inputs[0])


def unshare_shape_concats(model: ir.Model) -> int:
    """Give each Reshape/Expand its own copy of a shape ``Concat`` it shares with other nodes.

    The model computes the same; a head count written in the copy can then be rewritten for one
    attention block alone. Returns the number of copies made (names are deterministic).
    """
    copies = 0
    for concat in [n for n in model.graph if n.op_type == "Concat"]:
        uses = list(concat.outputs[0].uses())
        if len(uses) < 2 or any(u.node.op_type not in ("Reshape", "Expand") for u in uses):
            continue
        for use in uses[1:]:
            copy = ir.Node(
                "",
                "Concat",
                list(concat.inputs),
                attributes=list(concat.attributes.values()),
                name=f"{concat.name}_for_{use.node.name}",
            )
            copy.outputs[0].name = f"{concat.outputs[0].name}_for_{use.node.name}"
            model.graph.insert_after(concat, copy)
            use.node.replace_input_with(use.idx, copy.outputs[0])
            copies += 1
    return copies


def _shared_bias(value: ir.Value | None) -> ir.Value | None:
    """The constant behind ``value`` if other nodes use it too (directly or via Identity)."""
    node = value.producer() if value is not None else None
    if node is not None and node.op_type == "Identity":
        value = node.inputs[0]
        return value if value.const_value is not None else None
    shared = value is not None and value.const_value is not None and len(value.uses()) > 1
    return value if shared else None


def unshare_projection_biases(model: ir.Model) -> int:
    """Give each ``MatMul -> Add(bias) -> Reshape`` its own copy of a bias it shares.

    Exporters store equal tensors once (the dynamo exporter as one initializer, the TorchScript
    exporter behind ``Identity`` nodes), so the zero biases of a freshly initialised model are
    one tensor for all projections; slicing one projection's heads must not slice the others'.
    Returns the number of copies made (names are deterministic).
    """
    copies = 0
    for node in [n for n in model.graph if n.op_type == "Add"]:
        for index in (0, 1):
            bias, other = _shared_bias(node.inputs[index]), node.inputs[1 - index]
            producer = other.producer() if other is not None else None
            feeds = {u.node.op_type for u in node.outputs[0].uses()}
            if bias is None or producer is None or producer.op_type != "MatMul":
                continue
            if feeds != {"Reshape"}:
                continue
            name = f"{bias.name}_for_{node.name}"
            copy = ir.Value(name=name, shape=bias.shape, type=bias.type)
            copy.const_value = ir.Tensor(bias.const_value.numpy().copy(), name=name)
            model.graph.register_initializer(copy)
            node.replace_input_with(index, copy)
            copies += 1
    return copies


def _output_projection(path: HeadPath, context: ir.Node, head_dim: int) -> ir.Node:
    """Follow the context to ``MatMul(·, W_out)`` (rows of W_out follow the heads)."""
    value, axis, elements = context.outputs[0], 1, 1
    while True:
        path.axes[value] = (axis, "q", elements)
        uses = [u for u in value.uses() if u.node.op_type != "Shape"]
        if len(uses) != 1:
            users = ", ".join(f"{u.node.op_type} '{u.node.name}'" for u in uses)
            raise Refused(f"'{value.name}', which follows the heads, is used by: {users}")
        node = uses[0].node
        path.nodes.add(node)
        ranks = [len(v.shape) if v.shape is not None else None for v in (value, node.outputs[0])]
        if node.op_type in _PASS:
            value = node.outputs[0]
        elif node.op_type == "Transpose":
            axis = list(node.attributes.get_ints("perm", ())).index(axis)
            value = node.outputs[0]
        elif node.op_type == "Reshape" and ranks == [4, 4]:
            path.checks.append((node, axis, "q", elements))
            value = node.outputs[0]
        elif node.op_type == "Reshape" and ranks == [4, 3] and axis == 2 and elements == 1:
            elements = head_dim
            path.checks.append((node, 2, "q", elements))
            value = node.outputs[0]
        elif node.op_type == "MatMul" and uses[0].idx == 0 and elements > 1:
            weight = node.inputs[1]
            if constant_tensor(weight) is None or len(weight.shape) != 2 or axis != ranks[0] - 1:
                raise Refused("the output projection is not a constant 2-D weight", node)
            return node
        else:
            raise Refused(f"{node.op_type} after the attention context", node)


def _check_projections(projections: dict[str, Projection]) -> tuple[int, int]:
    query, key, value = projections["query"], projections["key"], projections["value"]
    if key.heads != value.heads or query.head_dim != key.head_dim:
        raise Refused(
            f"Q, K, V heads disagree ({query.heads}x{query.head_dim}, {key.heads}x"
            f"{key.head_dim}, {value.heads}x{value.head_dim})",
            query.split,
        )
    if query.heads % key.heads:
        raise Refused(f"{query.heads} query heads do not share {key.heads} key/value heads")
    for projection in projections.values():
        if len(projection.weight.uses()) != 1:
            raise Refused(f"weight '{projection.weight.name}' is shared by several nodes")
        if projection.bias is not None and len(projection.bias.uses()) != 1:
            raise Refused(f"bias '{projection.bias.name}' is shared by several nodes")
    return key.heads, query.heads // key.heads


def _projection_slices(group: ChannelGroup, projection: Projection, per_unit: int) -> list:
    """W and bias of a projection with ``per_unit`` columns per unit: whole units when that is
    the group's unit size, else (key/value heads shared by several query heads) explicitly."""
    if per_unit == group.unit_size:
        slices = [TensorSlice(projection.weight.name, 1, "producer", projection.matmul.name)]
        if projection.bias is not None:
            slices.append(TensorSlice(projection.bias.name, 0, "param"))
        return slices
    units = tuple(u for u in range(group.units) for _ in range(per_unit))
    positions = tuple(range(len(units)))
    tensors = [(projection.weight, 1), (projection.bias, 0)]
    return [
        TensorSlice(value.name, axis, "param", units=units, positions=positions)
        for value, axis in tensors
        if value is not None
    ]


def _match(model: ir.Model, context: ir.Node) -> ChannelGroup:
    path, projections = trace_attention(context)
    units, repeat = _check_projections(projections)
    value = projections["value"]
    consumer = _output_projection(path, context, value.head_dim)
    out_weight = consumer.inputs[1]
    if len(out_weight.uses()) != 1:
        raise Refused(f"weight '{out_weight.name}' is shared by several nodes", consumer)
    edits = check_head_path(model, path, units, repeat)
    group = ChannelGroup(
        id=f"heads:{out_weight.name}", kind="heads", units=units, unit_size=repeat * value.head_dim
    )
    for name, projection in projections.items():
        per_unit = projection.head_dim * (repeat if name == "query" else 1)
        group.slices += _projection_slices(group, projection, per_unit)
    group.slices.append(TensorSlice(out_weight.name, 0, "consumer", consumer.name))
    group.shape_edits.extend(edits)
    return group


def find_head_groups(model: ir.Model) -> list[ChannelGroup]:
    """One group per attention candidate, in graph order; refused ones blocked with the reason.

    Shared shape ``Concat`` nodes and projection biases are first given one copy per consumer
    (``unshare_shape_concats``, ``unshare_projection_biases``): the model changes, not its
    function.
    """
    unshare_shape_concats(model)
    unshare_projection_biases(model)
    groups = []
    for node in [n for n in model.graph if _is_candidate(n)]:
        try:
            groups.append(_match(model, node))
        except Refused as reason:
            logger.info("attention at '%s' refused: %s", node.name, reason)
            groups.append(
                ChannelGroup(id=f"heads:{node.name}", kind="heads", units=0, blocked=str(reason))
            )
    return groups
