"""The fault campaign, part 1: mutated models.

Seeded mutants of adult_mlp and of the dynamo CNN with external data (truncations, byte flips,
broken protobuf fields: dims, types, data_type, raw_data length, dangling names, opsets,
external data locations, offsets and lengths) run through inspect, prune, compress and verify.
The rules every run must keep are in ``fault_helpers.run_case``; the other parts are
``test_faults_data.py`` (bad data files), ``test_faults_paths.py`` (every output path against
every input path) and ``test_faults_fs.py`` (the file system refusing a write).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from fault_helpers import ADULT, DYNAMO_DIR, FAST, run_case

SEED = 8


def _truncate(data: bytes, rng: np.random.Generator, index: int) -> bytes:
    cuts = [1, 16, 64, len(data) // 4, len(data) // 2, 3 * len(data) // 4, len(data) - 64]
    return data[: cuts[index % len(cuts)]]


def _flip(data: bytes, rng: np.random.Generator, index: int) -> bytes:
    mutable = bytearray(data)
    for position in rng.integers(0, len(data), size=1 + index % 6):
        mutable[position] ^= int(rng.integers(1, 256))
    return bytes(mutable)


def _first_init(model: onnx.ModelProto) -> onnx.TensorProto:
    return model.graph.initializer[0]


def _input_dim(model: onnx.ModelProto, value: int) -> None:
    model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value = value


FIELD_MUTATIONS: dict[str, Callable[[onnx.ModelProto], None]] = {
    "init_dim_zero": lambda m: _first_init(m).dims.__setitem__(0, 0),
    "init_dim_negative": lambda m: _first_init(m).dims.__setitem__(0, -4),
    "init_dim_huge": lambda m: _first_init(m).dims.__setitem__(0, 1 << 40),
    "init_dim_dropped": lambda m: _first_init(m).dims.pop(),
    "init_dim_added": lambda m: _first_init(m).dims.append(1),
    "input_dim_negative": lambda m: _input_dim(m, -3),
    "input_dim_zero": lambda m: _input_dim(m, 0),
    "input_dim_huge": lambda m: _input_dim(m, 1 << 31),
    "input_rank_dropped": lambda m: m.graph.input[0].type.tensor_type.shape.dim.pop(),
    "input_shape_missing": lambda m: m.graph.input[0].type.tensor_type.ClearField("shape"),
    "input_type_missing": lambda m: m.graph.input[0].ClearField("type"),
    "input_type_undefined": lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 0),
    "input_type_string": lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 8),
    "input_type_int64": lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 7),
    "output_type_missing": lambda m: m.graph.output[0].ClearField("type"),
    "output_type_double": lambda m: setattr(m.graph.output[0].type.tensor_type, "elem_type", 11),
    "init_type_int64": lambda m: setattr(_first_init(m), "data_type", onnx.TensorProto.INT64),
    "init_type_float16": lambda m: setattr(_first_init(m), "data_type", onnx.TensorProto.FLOAT16),
    "init_type_double": lambda m: setattr(_first_init(m), "data_type", onnx.TensorProto.DOUBLE),
    "init_type_string": lambda m: setattr(_first_init(m), "data_type", onnx.TensorProto.STRING),
    "init_type_undefined": lambda m: setattr(_first_init(m), "data_type", 0),
    "init_type_unknown": lambda m: setattr(_first_init(m), "data_type", 999),
    "init_type_int4": lambda m: setattr(_first_init(m), "data_type", onnx.TensorProto.INT4),
    "raw_data_short_by_one": lambda m: setattr(
        _first_init(m), "raw_data", _first_init(m).raw_data[:-1]
    ),
    "raw_data_half": lambda m: setattr(
        _first_init(m), "raw_data", _first_init(m).raw_data[: len(_first_init(m).raw_data) // 2]
    ),
    "raw_data_empty": lambda m: _first_init(m).ClearField("raw_data"),
    "raw_data_long": lambda m: setattr(_first_init(m), "raw_data", _first_init(m).raw_data * 2),
    "typed_data_short": lambda m: (
        _first_init(m).ClearField("raw_data"),
        _first_init(m).float_data.extend([1.0, 2.0]),
    ),
    "dangling_node_input": lambda m: m.graph.node[0].input.__setitem__(0, "nowhere"),
    "dangling_weight": lambda m: m.graph.node[0].input.__setitem__(1, "no_weight"),
    "dangling_graph_output": lambda m: setattr(m.graph.output[0], "name", "nothing"),
    "no_outputs": lambda m: m.graph.ClearField("output"),
    "no_nodes": lambda m: m.graph.ClearField("node"),
    "no_inputs": lambda m: m.graph.ClearField("input"),
    "unknown_op": lambda m: setattr(m.graph.node[0], "op_type", "Frobnicate"),
    "unknown_domain": lambda m: setattr(m.graph.node[0], "domain", "com.nowhere"),
    "node_without_inputs": lambda m: m.graph.node[0].ClearField("input"),
    "node_extra_input": lambda m: m.graph.node[0].input.append(m.graph.node[0].input[1]),
    "node_without_outputs": lambda m: m.graph.node[-1].ClearField("output"),
    "duplicate_initializer": lambda m: m.graph.initializer.append(m.graph.initializer[0]),
    "initializer_named_like_input": lambda m: setattr(
        _first_init(m), "name", m.graph.input[0].name
    ),
    "attribute_wrong_type": lambda m: _set_attribute(m, onnx.helper.make_attribute("transB", 1.5)),
    "attribute_unknown": lambda m: _set_attribute(m, onnx.helper.make_attribute("frob", 1)),
    "attribute_empty_name": lambda m: _set_attribute(m, onnx.AttributeProto()),
    "no_opset": lambda m: m.ClearField("opset_import"),
    "opset_one": lambda m: setattr(m.opset_import[0], "version", 1),
    "opset_future": lambda m: setattr(m.opset_import[0], "version", 999),
    "ir_version_zero": lambda m: setattr(m, "ir_version", 0),
    "ir_version_future": lambda m: setattr(m, "ir_version", 99),
    "cycle": lambda m: m.graph.node[0].input.__setitem__(0, m.graph.node[-1].output[0]),
    "node_twice": lambda m: m.graph.node.append(m.graph.node[0]),
    "output_is_input": lambda m: setattr(m.graph.output[0], "name", m.graph.input[0].name),
}


def _set_attribute(model: onnx.ModelProto, attribute: onnx.AttributeProto) -> None:
    node = next(n for n in model.graph.node if n.attribute)
    kept = [a for a in node.attribute if a.name != attribute.name]
    node.ClearField("attribute")
    node.attribute.extend([*kept, attribute])


def _external_location(model: onnx.ModelProto, key: str, value: str) -> None:
    tensor = next(t for t in model.graph.initializer if t.external_data)
    entry = next(e for e in tensor.external_data if e.key == key)
    entry.value = value


DYNAMO_MUTATIONS: dict[str, Callable[[onnx.ModelProto], None]] = {
    "location_missing": lambda m: _external_location(m, "location", "absent.data"),
    "location_escapes": lambda m: _external_location(m, "location", "../../../etc/hostname"),
    "location_absolute": lambda m: _external_location(m, "location", "/etc/hostname"),
    "location_self": lambda m: _external_location(m, "location", "model.onnx"),
    "location_folder": lambda m: _external_location(m, "location", "."),
    "offset_past_end": lambda m: _external_location(m, "offset", str(1 << 30)),
    "offset_negative": lambda m: _external_location(m, "offset", "-8"),
    "offset_not_a_number": lambda m: _external_location(m, "offset", "x"),
    "length_too_long": lambda m: _external_location(m, "length", str(1 << 30)),
    "length_short": lambda m: _external_location(m, "length", "4"),
    "external_dims_huge": lambda m: next(
        t for t in m.graph.initializer if t.external_data
    ).dims.__setitem__(0, 1 << 40),
    **{name: FIELD_MUTATIONS[name] for name in ("input_dim_huge", "dangling_node_input")},
}

MODEL_CASES = (
    [("adult", "truncate", i) for i in range(7)]
    + [("adult", "flip", i) for i in range(60)]
    + [("adult", "field:" + name, 0) for name in FIELD_MUTATIONS]
    + [("dynamo", "truncate", i) for i in range(7)]
    + [("dynamo", "flip", i) for i in range(16)]
    + [("dynamo_data", "truncate", i) for i in range(4)]
    + [("dynamo_data", "flip", i) for i in range(8)]
    + [("dynamo", "field:" + name, 0) for name in DYNAMO_MUTATIONS]
)


def _mutant(workspace: Path, source: str, kind: str, index: int) -> tuple[Path, Path | None]:
    """Write the mutant; return the model to run and the data file that fits it."""
    rng = np.random.default_rng([SEED, index, len(kind)])
    if source == "adult":
        target, data, original = workspace / "mutant.onnx", workspace / "d.npz", ADULT
    else:
        target, data = workspace / "dynamo" / "model.onnx", workspace / "dynamo" / "d.npz"
        original = DYNAMO_DIR / ("model.onnx.data" if source == "dynamo_data" else "model.onnx")
    written = target.with_name(original.name) if source == "dynamo_data" else target
    raw = original.read_bytes()
    if kind.startswith("field:"):
        name = kind.split(":", 1)[1]
        proto = onnx.load_model_from_string(raw)
        (DYNAMO_MUTATIONS if source == "dynamo" else FIELD_MUTATIONS)[name](proto)
        raw = proto.SerializeToString()
    else:
        raw = (_truncate if kind == "truncate" else _flip)(raw, rng, index)
    written.write_bytes(raw)
    return target, data


@pytest.mark.parametrize(
    ("source", "kind", "index"), MODEL_CASES, ids=[f"{s}-{k}-{i}" for s, k, i in MODEL_CASES]
)
def test_mutated_model(workspace: Path, source: str, kind: str, index: int, record_property):
    model, data = _mutant(workspace, source, kind, index)
    out = model.parent / "out.onnx"
    label = f"model:{kind.split(':')[0]}"
    run_case(workspace, ["inspect", model, "--json"], record_property, label)
    run_case(
        workspace,
        ["prune", model, "-o", out, "--report", out.with_suffix(".json")],
        record_property,
        label,
    )
    run_case(workspace, ["compress", model, "-o", out, *FAST], record_property, label)
    original = workspace / "m.onnx" if source == "adult" else model
    run_case(workspace, ["verify", original, model, "--data", data, *FAST], record_property, label)
