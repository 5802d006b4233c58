"""Structured pruning through Concat, Split and Slice on the channel axis (issue #8).

Each small graph (ONNX text syntax) is pruned by ``onnxprune.prune_file`` at 50% with
``round_to=1``. The result must pass the full checker and load in onnxruntime (``save_model``
checks both), have the expected tensor shapes and counted integers (split sizes, slice bounds),
and compute what the original computes with the removed channels' producer weights zeroed. That
comparison is exact because producers have no bias and a ReLU follows them: a zeroed channel is
exactly 0 and adds nothing downstream. Which channels go is known in advance: each producer has
``strong`` output channels (weights about 20 times larger) that l2 importance keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import parse_model
from onnx import numpy_helper
from onnx_ir.passes.common import NameFixPass, ShapeInferencePass

import onnxprune
from onnxprune.structured.dependency import find_channel_groups

HALF = onnxprune.StructuredOptions(target="channels", sparsity=0.5, round_to=1)


@dataclass(frozen=True)
class Case:
    """A model, the strong channels of its producers, and what pruning must produce."""

    opset: int
    signature: str
    body: str
    weights: dict  # name -> (shape, strong output channels or None when not pruned)
    expect: dict  # initializer -> shape after pruning
    constants: str = ""  # more initializers, in text syntax
    counts: dict = field(default_factory=dict)  # (node output, "split"|"starts"|"ends") -> ints
    groups: dict = field(default_factory=dict)  # pruned group id -> (units before, after)
    target: str = "channels"
    out_axis: int = 0  # axis of the producers' output channels (1 for MatMul)


def _values(shape, strong, out_axis: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.5, 1.0, shape) * rng.choice([-1.0, 1.0], shape) * 0.05
    if strong:
        index = [slice(None)] * len(shape)
        index[out_axis] = list(strong)
        values[tuple(index)] *= 20
    return values.astype(np.float32)


def _text(case: Case) -> str:
    inits = []
    for seed, (name, (shape, strong)) in enumerate(sorted(case.weights.items())):
        values = _values(shape, strong, case.out_axis, seed)
        numbers = ", ".join(f"{v:.6f}" for v in values.ravel())
        inits.append(f"float[{','.join(map(str, shape))}] {name} = {{{numbers}}}")
    if case.constants:
        inits.append(case.constants)
    return (
        f'<ir_version: 8, opset_import: ["" : {case.opset}]>\n'
        f"g {case.signature}\n<{', '.join(inits)}>\n{{\n{case.body}\n}}\n"
    )


def _zeroed(model: onnx.ModelProto, case: Case) -> onnx.ModelProto:
    """The original with every non-strong output channel of each pruned producer zeroed."""
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(model)
    for tensor in zeroed.graph.initializer:
        shape, strong = case.weights.get(tensor.name, (None, None))
        if strong is not None:
            array = numpy_helper.to_array(tensor).copy()
            index = [slice(None)] * array.ndim
            index[case.out_axis] = np.setdiff1d(np.arange(shape[case.out_axis]), strong)
            array[tuple(index)] = 0
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return zeroed


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _feeds(model: onnx.ModelProto) -> dict:
    rng = np.random.default_rng(1)
    return {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for i in model.graph.input
    }


def _ints(model: onnx.ModelProto, output: str, name: str) -> tuple[int, ...] | None:
    """A Split's sizes or a Slice's starts/ends, from its attribute or its constant input."""
    node = next(n for n in model.graph.node if output in n.output)
    for attribute in node.attribute:
        if attribute.name == name:
            return tuple(attribute.ints)
    index = {"split": 1, "starts": 1, "ends": 2}[name]
    if len(node.input) <= index or not node.input[index]:
        return None
    tensor = next(t for t in model.graph.initializer if t.name == node.input[index])
    return tuple(int(v) for v in numpy_helper.to_array(tensor))


def _check(case: Case, tmp_path: Path) -> onnx.ModelProto:
    model = parse_model(_text(case), tmp_path / "model.onnx")
    options = onnxprune.StructuredOptions(target=case.target, sparsity=0.5, round_to=1)
    report = onnxprune.prune_file(tmp_path / "model.onnx", tmp_path / "pruned.onnx", options)
    groups = {g["id"]: (g["units_before"], g["units_after"]) for g in report["pruning"]["groups"]}
    assert groups == case.groups
    pruned = onnx.load(str(tmp_path / "pruned.onnx"))
    shapes = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert {name: shapes[name] for name in case.expect} == case.expect
    for (output, name), values in case.counts.items():
        assert _ints(pruned, output, name) == values, (output, name)
    feeds = _feeds(model)
    for got, want in zip(_run(pruned, feeds), _run(_zeroed(model, case), feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return pruned


X = "(float[1,3,4,4] x) => (float[1,5,4,4] y)"
CONCAT = {
    "two_convs_concat_conv": Case(
        17,
        X,
        """a = Conv(x, wa)
        ra = Relu(a)
        b = Conv(x, wb)
        rb = Relu(b)
        c = Concat<axis=1>(ra, rb)
        y = Conv(c, wc)""",
        {
            "wa": ((4, 3, 1, 1), (0, 3)),
            "wb": ((6, 3, 1, 1), (1, 2, 4)),
            "wc": ((5, 10, 1, 1), None),
        },
        {"wa": (2, 3, 1, 1), "wb": (3, 3, 1, 1), "wc": (5, 5, 1, 1)},
        groups={"wa": (4, 2), "wb": (6, 3)},
    ),
    "concat_with_graph_input": Case(
        17,
        X,
        """a = Conv(x, wa)
        ra = Relu(a)
        c = Concat<axis=1>(x, ra)
        y = Conv(c, wc)""",
        {"wa": ((4, 3, 1, 1), (0, 3)), "wc": ((5, 7, 1, 1), None)},
        {"wa": (2, 3, 1, 1), "wc": (5, 5, 1, 1)},
        groups={"wa": (4, 2)},
    ),
    "negative_axis_batchnorm": Case(
        17,
        X,
        """a = Conv(x, wa)
        ra = Relu(a)
        b = Conv(x, wb)
        rb = Relu(b)
        c = Concat<axis=-3>(ra, rb)
        n = BatchNormalization(c, scale, bias, mean, var)
        r = Relu(n)
        y = Conv(r, wc)""",
        {
            "wa": ((4, 3, 1, 1), (1, 2)),
            "wb": ((6, 3, 1, 1), (0, 4, 5)),
            "wc": ((5, 10, 1, 1), None),
        },
        {"wa": (2, 3, 1, 1), "wb": (3, 3, 1, 1), "wc": (5, 5, 1, 1), "scale": (5,), "mean": (5,)},
        # mean and bias 0: normalising a zeroed channel gives 0, so the comparison stays exact
        constants="float[10] scale = {1,2,3,4,5,6,7,8,9,10},"
        " float[10] bias = {0,0,0,0,0,0,0,0,0,0}, float[10] mean = {0,0,0,0,0,0,0,0,0,0},"
        " float[10] var = {1,2,1,2,1,2,1,2,1,2}",
        groups={"wa": (4, 2), "wb": (6, 3)},
    ),
    "same_tensor_twice_matmul": Case(
        17,
        "(float[2,4] x) => (float[2,5] y)",
        """h = MatMul(x, w1)
        r = Relu(h)
        c = Concat<axis=-1>(r, r)
        y = MatMul(c, w2)""",
        {"w1": ((4, 6), (0, 2, 5)), "w2": ((12, 5), None)},
        {"w1": (4, 3), "w2": (6, 5)},
        groups={"w1": (6, 3)},
        target="ffn",
        out_axis=1,
    ),
    "residual_couples_concat_inputs": Case(
        17,
        X,
        """a = Conv(x, wa)
        ra = Relu(a)
        b = Conv(x, wb)
        rb = Relu(b)
        c = Conv(x, wc)
        rc = Relu(c)
        cat = Concat<axis=1>(ra, rb)
        s = Add(cat, rc)
        y = Conv(s, wd)""",
        {
            "wa": ((4, 3, 1, 1), (0, 3)),
            "wb": ((4, 3, 1, 1), (1, 2)),
            "wc": ((8, 3, 1, 1), (0, 3, 5, 6)),
            "wd": ((5, 8, 1, 1), None),
        },
        {"wa": (2, 3, 1, 1), "wb": (2, 3, 1, 1), "wc": (4, 3, 1, 1), "wd": (5, 4, 1, 1)},
        groups={"wa": (8, 4)},
    ),
}


@pytest.mark.parametrize("name", sorted(CONCAT))
def test_concat_inputs_prune_at_their_offsets(name: str, tmp_path: Path) -> None:
    _check(CONCAT[name], tmp_path)


C2F = """h = Conv(x, w1)
        r = Relu(h)
        {split}
        m = Conv(y1, wm)
        rm = Relu(m)
        c = Concat<axis=1>({joined})
        y = Conv(c, w2)"""
C2F_WEIGHTS = {
    "w1": ((8, 3, 1, 1), (0, 4, 5, 7)),  # keeps 1 channel of the first half, 3 of the second
    "wm": ((4, 4, 1, 1), (1, 2)),
    "w2": ((5, 12, 1, 1), None),
}
C2F_EXPECT = {"w1": (4, 3, 1, 1), "wm": (2, 3, 1, 1), "w2": (5, 6, 1, 1)}
SIZES = "int64[2] sizes = {4, 4}"
SPLIT_FORMS = {  # name -> (opset, Split line, constants)
    "opset11_split_attribute": (11, "y0, y1 = Split<axis=1, split=[4, 4]>(r)", ""),
    "opset11_equal": (11, "y0, y1 = Split<axis=1>(r)", ""),
    "opset13_split_input": (13, "y0, y1 = Split<axis=1>(r, sizes)", SIZES),
    "opset13_equal": (13, "y0, y1 = Split<axis=1>(r)", ""),
    "opset18_num_outputs": (18, "y0, y1 = Split<axis=1, num_outputs=2>(r)", ""),
    "opset18_negative_axis": (18, "y0, y1 = Split<axis=-3>(r, sizes)", SIZES),
    "opset13_constant_node": (
        13,
        "sizes = Constant<value = int64[2] {4, 4}>()\n        y0, y1 = Split<axis=1>(r, sizes)",
        "",
    ),
}


@pytest.mark.parametrize("form", sorted(SPLIT_FORMS))
def test_split_c2f_rewrites_split_sizes(form: str, tmp_path: Path) -> None:
    """Conv -> Split -> (y0, y1 -> Conv) -> Concat(y0, y1, Conv) -> Conv, in every opset form:
    the sizes become the kept channels of each part, written as an attribute before opset 13
    and as an input from 13 (an equal split becomes explicit; num_outputs goes)."""
    opset, split, constants = SPLIT_FORMS[form]
    case = Case(
        opset,
        X,
        C2F.format(split=split, joined="y0, y1, rm"),
        C2F_WEIGHTS,
        C2F_EXPECT,
        constants=constants,
        counts={("y0", "split"): (1, 3)},
        groups={"w1": (8, 4), "wm": (4, 2)},
    )
    pruned = _check(case, tmp_path)
    node = next(n for n in pruned.graph.node if n.op_type == "Split")
    attributes = {a.name for a in node.attribute}
    assert ("split" in attributes) == (opset < 13) and "num_outputs" not in attributes
    assert (len(node.input) > 1) == (opset >= 13)


SPLIT = {
    "c2f_reordered_concat": Case(
        13,
        X,
        C2F.format(split="y0, y1 = Split<axis=1>(r, sizes)", joined="y1, rm, y0"),
        C2F_WEIGHTS,
        C2F_EXPECT,
        constants=SIZES,
        counts={("y0", "split"): (1, 3)},
        groups={"w1": (8, 4), "wm": (4, 2)},
    ),
    "c2f_shortcut_couples_split_half": Case(  # YOLOv8 C2f: y1 + bottleneck(y1)
        13,
        X,
        """h = Conv(x, w1)
        r = Relu(h)
        y0, y1 = Split<axis=1>(r, sizes)
        m1 = Conv(y1, wm1)
        r1 = Relu(m1)
        m2 = Conv(r1, wm2)
        r2 = Relu(m2)
        s = Add(y1, r2)
        c = Concat<axis=1>(y0, y1, s)
        y = Conv(c, w2)""",
        {
            "w1": ((8, 3, 1, 1), (0, 4, 5, 7)),
            "wm1": ((4, 4, 1, 1), (1, 2)),
            "wm2": ((4, 4, 1, 1), (0, 1, 3)),  # the same channels as w1's second half
            "w2": ((5, 12, 1, 1), None),
        },
        {"w1": (4, 3, 1, 1), "wm1": (2, 3, 1, 1), "wm2": (3, 2, 1, 1), "w2": (5, 7, 1, 1)},
        constants=SIZES,
        counts={("y0", "split"): (1, 3)},
        groups={"w1": (8, 4), "wm1": (4, 2)},
    ),
    "split_on_spatial_axis": Case(
        13,
        "(float[1,3,4,4] x) => (float[1,5,2,4] y)",
        """h = Conv(x, w1)
        r = Relu(h)
        y0, y1 = Split<axis=2>(r)
        c0 = Conv(y0, wa)
        c1 = Conv(y1, wb)
        y = Add(c0, c1)""",
        {
            "w1": ((8, 3, 1, 1), (0, 4, 5, 7)),
            "wa": ((5, 8, 1, 1), None),
            "wb": ((5, 8, 1, 1), None),
        },
        {"w1": (4, 3, 1, 1), "wa": (5, 4, 1, 1), "wb": (5, 4, 1, 1)},
        counts={("y0", "split"): None},  # parts along another axis keep their sizes
        groups={"w1": (8, 4)},
    ),
}


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_split_routes_channel_ranges(name: str, tmp_path: Path) -> None:
    _check(SPLIT[name], tmp_path)


SLICE_BODY = """h = Conv(x, w1)
        r = Relu(h)
        {slice}
        y = Conv(s, w2)"""
INT64_MAX = 2**63 - 1
SLICE_FORMS = {  # name -> (opset, Slice line, constants, spatial rows, w2 inputs, starts, ends)
    "opset9_attributes": (
        9,
        "s = Slice<starts=[2], ends=[6], axes=[1]>(r)",
        "",
        4,
        4,
        (1,),
        (3,),
    ),
    "opset13_inputs": (
        13,
        "s = Slice(r, starts, ends, axes)",
        "int64[1] starts = {2}, int64[1] ends = {6}, int64[1] axes = {1}",
        4,
        4,
        (1,),
        (3,),
    ),
    "opset13_negative_int32": (
        13,
        "s = Slice(r, starts, ends, axes, steps)",
        "int32[1] starts = {-6}, int32[1] ends = {-2}, int32[1] axes = {-3}, int32[1] steps = {1}",
        4,
        4,
        (1,),
        (3,),
    ),
    "opset13_open_end": (
        13,
        "s = Slice(r, starts, ends, axes)",
        f"int64[1] starts = {{4}}, int64[1] ends = {{{INT64_MAX}}}, int64[1] axes = {{1}}",
        4,
        4,
        (1,),
        (INT64_MAX,),
    ),
    "opset13_constant_nodes": (
        13,
        "starts = Constant<value_ints = [2]>()\n        ends = Constant<value = int64[1] {6}>()"
        "\n        axes = Constant<value_ints = [1]>()\n        s = Slice(r, starts, ends, axes)",
        "",
        4,
        4,
        (1,),
        (3,),
    ),
    "opset18_two_axes": (
        18,
        "s = Slice(r, starts, ends, axes)",
        "int64[2] starts = {2, 0}, int64[2] ends = {6, 3}, int64[2] axes = {1, 2}",
        3,
        4,
        (1, 0),
        (3, 3),
    ),
}


@pytest.mark.parametrize("form", sorted(SLICE_FORMS))
def test_slice_on_channels_rewrites_bounds(form: str, tmp_path: Path) -> None:
    """Channels [2, 6) of a Conv whose strong channels are 0, 4, 5, 7: the slice keeps 4 and 5;
    start and end lose the removed channels before them (1, 2, 3), in every opset form."""
    opset, line, constants, rows, inputs, starts, ends = SLICE_FORMS[form]
    case = Case(
        opset,
        f"(float[1,3,4,4] x) => (float[1,5,{rows},4] y)",
        SLICE_BODY.format(slice=line),
        {"w1": ((8, 3, 1, 1), (0, 4, 5, 7)), "w2": ((5, inputs, 1, 1), None)},
        {"w1": (4, 3, 1, 1), "w2": (5, inputs - 2 + (form == "opset13_open_end"), 1, 1)},
        constants=constants,
        counts={("s", "starts"): starts, ("s", "ends"): ends},
        groups={"w1": (8, 4)},
    )
    _check(case, tmp_path)


def test_slices_of_both_halves_share_bounds(tmp_path: Path) -> None:
    """Two Slices (sharing their axes constant) take the halves; each is rewritten on its own."""
    case = Case(
        13,
        X,
        """h = Conv(x, w1)
        r = Relu(h)
        s0 = Slice(r, zero, four, axes)
        s1 = Slice(r, four, eight, axes)
        m = Conv(s1, wm)
        rm = Relu(m)
        c = Concat<axis=1>(s0, rm, s1)
        y = Conv(c, w2)""",
        C2F_WEIGHTS,
        C2F_EXPECT,
        constants="int64[1] zero = {0}, int64[1] four = {4}, int64[1] eight = {8},"
        " int64[1] axes = {1}",
        counts={("s0", "ends"): (1,), ("s1", "starts"): (1,), ("s1", "ends"): (8,)},
        groups={"w1": (8, 4), "wm": (4, 2)},
    )
    _check(case, tmp_path)


BLOCKED = {  # name -> (signature, body, constants, reason)
    "concat_on_spatial_axis": (
        "(float[1,3,4,4] x) => (float[1,5,8,4] y)",
        """c = Concat<axis=2>(r, r)
        y = Conv(c, w2)""",
        "",
        "joins tensors on axis 2, the channels are on axis 1",
    ),
    "concat_dynamic_channels": (
        "(float[1,3,4,4] x, float[1,C,4,4] z) => (float[1,5,4,4] y)",
        """c = Concat<axis=1>(r, z)
        y = Conv(c, w2)""",
        "",
        "input 1 ('z') has no static channel count",
    ),
    "split_sizes_computed": (
        "(float[1,3,4,4] x, int64[2] sizes) => (float[1,5,4,4] y)",
        """y0, y1 = Split<axis=1>(r, sizes)
        y = Conv(y0, w2)""",
        "",
        "split sizes 'sizes' is computed, not a constant",
    ),
    "slice_step_2": (
        "(float[1,3,4,4] x) => (float[1,5,4,4] y)",
        """s = Slice(r, starts, ends, axes, steps)
        y = Conv(s, w2)""",
        "int64[1] starts = {0}, int64[1] ends = {8}, int64[1] axes = {1}, int64[1] steps = {2}",
        "step 2 on the channel axis",
    ),
    "split_part_is_a_graph_output": (
        "(float[1,3,4,4] x) => (float[1,4,4,4] y, float[1,4,4,4] y1)",
        """y, y1 = Split<axis=1>(r, sizes)""",
        SIZES,
        "channels reach the graph output 'y1'",
    ),
}


@pytest.mark.parametrize("name", sorted(BLOCKED))
def test_unsupported_routes_block_with_a_reason(name: str) -> None:
    signature, body, constants, reason = BLOCKED[name]
    case = Case(
        13,
        signature,
        f"h = Conv(x, w1)\n        r = Relu(h)\n        {body}",
        {"w1": ((8, 3, 1, 1), None), "w2": ((5, 4 if "Split" in body else 8, 1, 1), None)},
        {},
        constants=constants,
    )
    model = ir.serde.deserialize_model(parse_model(_text(case)))
    NameFixPass()(model)
    ShapeInferencePass()(model)
    group = next(g for g in find_channel_groups(model) if g.id == "w1")
    assert group.blocked is not None and reason in group.blocked


def _calibration(tmp_path: Path) -> str:
    path = tmp_path / "calibration.npz"
    rng = np.random.default_rng(2)
    np.savez(path, x=rng.standard_normal((16, 3, 4, 4)).astype(np.float32))
    return str(path)


def test_obs_and_repair_refuse_routed_groups_with_a_reason(tmp_path: Path) -> None:
    """Data-aware repair and OBS do not handle shared consumer positions: routed groups are
    left alone with the reason, the others are pruned."""
    body = C2F.format(split="y0, y1 = Split<axis=1>(r, sizes)", joined="y0, y1, rm")
    body = "p = Conv(x, w0)\n        r0 = Relu(p)\n        " + body.replace("(x, w1)", "(r0, w1)")
    weights = {**C2F_WEIGHTS, "w0": ((6, 3, 1, 1), None), "w1": ((8, 6, 1, 1), None)}
    case = Case(13, X, body, weights, {}, constants=SIZES)
    parse_model(_text(case), tmp_path / "model.onnx")
    options = onnxprune.StructuredOptions(
        target="channels", sparsity=0.5, round_to=1, calibration=_calibration(tmp_path)
    )
    report = onnxprune.prune_file(tmp_path / "model.onnx", tmp_path / "p.onnx", options)
    assert [g["id"] for g in report["pruning"]["groups"]] == ["w0"]
    reasons = {g["id"]: g["reason"] for g in report["pruning"]["skipped"]}
    assert "obs importance not supported" in reasons["w1"]
    assert "obs importance not supported" in reasons["wm"]


def test_activation_importance_scores_routed_groups(tmp_path: Path) -> None:
    case = CONCAT["two_convs_concat_conv"]
    parse_model(_text(case), tmp_path / "model.onnx")
    options = onnxprune.StructuredOptions(
        target="channels",
        sparsity=0.5,
        round_to=1,
        importance="activation",
        calibration=_calibration(tmp_path),
    )
    report = onnxprune.prune_file(tmp_path / "model.onnx", tmp_path / "p.onnx", options)
    assert {g["id"]: g["units_after"] for g in report["pruning"]["groups"]} == {"wa": 2, "wb": 3}
    shapes = {t.name: tuple(t.dims) for t in onnx.load(str(tmp_path / "p.onnx")).graph.initializer}
    assert shapes["wc"] == (5, 5, 1, 1)


def test_widening_refuses_routed_channels(tmp_path: Path) -> None:
    from onnxprune.errors import InputError
    from onnxprune.grow import find_group

    model = ir.serde.deserialize_model(parse_model(_text(CONCAT["two_convs_concat_conv"])))
    with pytest.raises(InputError, match="Concat/Split/Slice"):
        find_group(model, "wa")


def test_replayed_manifest_prunes_routed_groups_identically(tmp_path: Path) -> None:
    """Kept units of a group merged across a Split half replay to the same model."""
    parse_model(_text(SPLIT["c2f_shortcut_couples_split_half"]), tmp_path / "model.onnx")
    report = onnxprune.prune_file(tmp_path / "model.onnx", tmp_path / "a.onnx", HALF)
    manifest = onnxprune.manifest(report, tmp_path / "model.onnx")
    decisions = onnxprune.decisions_from_manifest(manifest, tmp_path / "model.onnx")
    onnxprune.prune_file(tmp_path / "model.onnx", tmp_path / "b.onnx", HALF, decisions=decisions)
    first, replayed = (
        {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / n)).graph.initializer}
        for n in ("a.onnx", "b.onnx")
    )
    assert first.keys() == replayed.keys()
    assert all(np.array_equal(first[name], replayed[name]) for name in first)
