"""The op-knowledge table: what onnxprune knows about each ONNX operator.

Every decision about how a constant input of a node may be treated comes from ``OP_TABLE``.
An entry says, per input index, either how a prunable weight is laid out (which axis carries
the node's output channels, which its input channels, after ``transB``/``group``/transposed
layouts are taken into account) or what role the constant plays (bias, normalization
parameter, embedding table), which keeps it out of pruning. An operator that is not in the
table is never treated as a weight consumer: pruning through it is refused with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxprune.activations import ConvView, LinearView
from onnxprune.routing import RoutingRule, concat_routing, slice_routing, split_routing

__all__ = [
    "OP_TABLE",
    "OpKnowledge",
    "WeightLayout",
    "activation_view",
    "lookup",
    "weight_layout",
]


@dataclass(frozen=True)
class WeightLayout:
    """Axes of a weight tensor that carry the consuming node's output and input channels."""

    out_axis: int
    in_axis: int


# A layout rule returns the layout of a weight for this node, or the reason it is not prunable.
LayoutRule = Callable[[ir.Node, int], "WeightLayout | str"]
# An activation rule returns a view (onnxprune.activations) for the node's input 0, or a reason.
ActivationRule = Callable[[ir.Node, tuple[int, ...]], "LinearView | ConvView | str"]


@dataclass(frozen=True)
class OpKnowledge:
    """What one operator's constant inputs mean.

    Attributes:
        weights: input index -> rule giving the layout of a prunable weight at that input.
        roles: input index -> role of a constant input that is deliberately left alone.
        activation: rule giving how input 0 (the activation) lines up with the weight, for
            data-aware methods; None means data-aware methods cannot prune this op.
        channels: how the op treats a channel axis of its input, for structured pruning:
            ``unary`` (elementwise on one tensor), ``elementwise`` (broadcasting binary op),
            ``batchnorm`` (per-channel parameters on axis 1), ``pool`` (spatial pooling that
            keeps axis 1), ``reduce`` (keeps axes it does not reduce), ``flatten``/``reshape``
            (only [N, C, 1, ...] -> [N, C]), ``linear`` and ``conv`` (consume channels on
            input 0, produce channels from their weight), ``route`` (moves channel positions
            between inputs and outputs as ``routing`` says). None blocks structured pruning.
        routing: for ``route`` ops, the rule (onnxprune.routing) giving which input positions
            along the channel axis reach which output positions, and which of the node's
            integers count them.
    """

    weights: Mapping[int, LayoutRule] = field(default_factory=dict)
    roles: Mapping[int, str] = field(default_factory=dict)
    activation: ActivationRule | None = None
    channels: str | None = None
    routing: RoutingRule | None = None


def _conv_weight(node: ir.Node, rank: int) -> WeightLayout | str:
    # Conv weight: [C_out, C_in / group, k...]; per-group input channels sit on axis 1.
    if rank < 3:
        return f"Conv weight of rank {rank} (expected at least 3)"
    return WeightLayout(out_axis=0, in_axis=1)


def _conv_transpose_weight(node: ir.Node, rank: int) -> WeightLayout | str:
    # ConvTranspose weight: [C_in, C_out / group, k...].
    if rank < 3:
        return f"ConvTranspose weight of rank {rank} (expected at least 3)"
    return WeightLayout(out_axis=1, in_axis=0)


def _gemm_b(node: ir.Node, rank: int) -> WeightLayout | str:
    # Gemm computes A' @ B' with B' = B.T when transB=1: B is [N, K] then, else [K, N].
    if rank != 2:
        return f"Gemm B of rank {rank}"
    trans_b = node.attributes.get_int("transB", 0)
    return WeightLayout(out_axis=0, in_axis=1) if trans_b else WeightLayout(out_axis=1, in_axis=0)


def _matmul_b(node: ir.Node, rank: int) -> WeightLayout | str:
    # x @ W with W of shape [K, N]: input channels on axis 0, output channels on axis 1.
    if rank != 2:
        return f"MatMul constant B of rank {rank} (only 2-D weights are pruned)"
    return WeightLayout(out_axis=1, in_axis=0)


def _recurrent_weight(node: ir.Node, rank: int) -> WeightLayout | str:
    # LSTM/GRU/RNN W [directions, gates*hidden, input] and R [directions, gates*hidden, hidden]:
    # each gate row is an output, its inputs run along the last axis.
    if rank != 3:
        return f"{node.op_type} weight of rank {rank} (expected 3)"
    return WeightLayout(out_axis=1, in_axis=2)


def _linear_activation(node: ir.Node, weight_shape: tuple[int, ...]) -> LinearView | str:
    if node.op_type == "Gemm":
        if node.attributes.get_int("transA", 0):
            return "Gemm with transA=1: activation layout not supported"
        trans_b = node.attributes.get_int("transB", 0)
        return LinearView(weight_shape[1] if trans_b else weight_shape[0])
    return LinearView(weight_shape[0])


def _conv_activation(node: ir.Node, weight_shape: tuple[int, ...]) -> ConvView | str:
    if len(weight_shape) != 4:
        return f"{len(weight_shape) - 2}-D Conv: only 2-D is supported by data-aware methods"
    if node.attributes.get_int("group", 1) != 1:
        return "grouped Conv: not supported by data-aware methods"
    if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "Conv with auto_pad SAME: not supported by data-aware methods"
    kernel = tuple(weight_shape[2:])
    return ConvView(
        kernel=kernel,
        pads=tuple(node.attributes.get_ints("pads", (0, 0, 0, 0))),
        strides=tuple(node.attributes.get_ints("strides", (1, 1))),
        dilations=tuple(node.attributes.get_ints("dilations", (1, 1))),
    )


# Ops applied element by element to one tensor (extra inputs, if any, are scalars or flags).
_UNARY = (
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Erf",
    "Gelu",
    "Elu",
    "Selu",
    "Softplus",
    "Softsign",
    "Mish",
    "Clip",
    "Identity",
    "Dropout",
    "Neg",
    "Abs",
    "Exp",
    "Sqrt",
    "Cast",
)
_POOLS = ("GlobalAveragePool", "GlobalMaxPool", "MaxPool", "AveragePool")

_BIAS = "bias"
_NORM = "normalization parameter"
_ELEMENTWISE = "elementwise operand"

OP_TABLE: dict[tuple[str, str], OpKnowledge] = {
    ("", "Conv"): OpKnowledge(
        weights={1: _conv_weight},
        roles={2: _BIAS},
        activation=_conv_activation,
        channels="conv",
    ),
    ("", "ConvTranspose"): OpKnowledge(weights={1: _conv_transpose_weight}, roles={2: _BIAS}),
    ("", "Gemm"): OpKnowledge(
        weights={1: _gemm_b},
        roles={0: "Gemm A input (activation side)", 2: _BIAS},
        activation=_linear_activation,
        channels="linear",
    ),
    ("", "MatMul"): OpKnowledge(
        weights={1: _matmul_b},
        roles={0: "constant MatMul A input (activation side)"},
        activation=_linear_activation,
        channels="linear",
    ),
    **{
        ("", op): OpKnowledge(
            weights={1: _recurrent_weight, 2: _recurrent_weight},
            roles={
                0: "recurrent input sequence",
                3: _BIAS,
                4: "sequence lengths",
                5: "initial hidden state",
                6: "initial cell state",
                7: "peephole weights",
            },
        )
        for op in ("LSTM", "GRU", "RNN")
    },
    ("", "Gather"): OpKnowledge(roles={0: "embedding table (Gather data)", 1: "gather indices"}),
    ("", "BatchNormalization"): OpKnowledge(
        roles=dict.fromkeys(range(1, 5), _NORM), channels="batchnorm"
    ),
    ("", "LayerNormalization"): OpKnowledge(roles={1: _NORM, 2: _NORM}),
    ("", "InstanceNormalization"): OpKnowledge(roles={1: _NORM, 2: _NORM}),
    ("", "GroupNormalization"): OpKnowledge(roles={1: _NORM, 2: _NORM}),
    **{
        ("", op): OpKnowledge(roles={0: _ELEMENTWISE, 1: _ELEMENTWISE}, channels="elementwise")
        for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu")
    },
    ("", "Pow"): OpKnowledge(roles={0: _ELEMENTWISE, 1: _ELEMENTWISE}),
    **{("", op): OpKnowledge(channels="unary") for op in _UNARY},
    **{("", op): OpKnowledge(channels="pool") for op in _POOLS},
    **{
        ("", op): OpKnowledge(
            roles={1: "resize parameter", 2: "resize parameter", 3: "sizes"}, channels="resize"
        )
        for op in ("Resize", "Upsample")
    },
    **{("", op): OpKnowledge(channels="reduce") for op in ("ReduceMean", "ReduceMax", "ReduceSum")},
    ("", "Flatten"): OpKnowledge(channels="flatten"),
    ("", "Reshape"): OpKnowledge(roles={1: "shape"}, channels="reshape"),
    ("", "Concat"): OpKnowledge(channels="route", routing=concat_routing),
    ("", "Split"): OpKnowledge(roles={1: "split sizes"}, channels="route", routing=split_routing),
    ("", "Slice"): OpKnowledge(
        roles=dict.fromkeys(range(1, 5), "slice bounds"), channels="route", routing=slice_routing
    ),
}


def lookup(node: ir.Node) -> OpKnowledge | None:
    """The table entry of ``node``'s operator, or None if onnxprune does not know it."""
    return OP_TABLE.get((node.domain or "", node.op_type))


def activation_view(node: ir.Node, weight_shape: tuple[int, ...]) -> LinearView | ConvView | str:
    """How input 0 of ``node`` lines up with its weight (an activations view), or a reason."""
    knowledge = lookup(node)
    if knowledge is None or knowledge.activation is None:
        return f"{node.op_type}: no activation view for data-aware methods"
    return knowledge.activation(node, weight_shape)


def weight_layout(node: ir.Node, input_index: int, rank: int) -> WeightLayout | str:
    """Layout of the constant at ``node.inputs[input_index]``, or why it is not prunable."""
    knowledge = lookup(node)
    if knowledge is None:
        return f"consumed by {node.op_type}, which is not in the op table"
    rule = knowledge.weights.get(input_index)
    if rule is not None:
        return rule(node, rank)
    role = knowledge.roles.get(input_index)
    if role is not None:
        return role
    return f"input {input_index} of {node.op_type} is not a weight input"
