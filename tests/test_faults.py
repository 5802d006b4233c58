"""A fault campaign: mutated models, bad data files and every pairing of output paths with input
paths, run through the command line.

Every run must end in 0, 1 or 2 (never 3, an internal error), leave every input byte for byte as
it was, and write nothing at all when it exits 2. Mutants come from a seeded generator, so a
failure names a case that reproduces. Each case records its kind and exit code as junit
properties (``record_property``): ``pytest tests/test_faults.py --junitxml=faults.xml`` gives
the campaign's tally.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, REPO

from cli.main import main

SEED = 8
FAST = ["--latency-runs", "0"]
ADULT = FIXTURES / "adult_mlp.onnx"
DYNAMO_DIR = FIXTURES / "digits_cnn_dynamo"
INTERNAL_ERROR = 3


# ---------------------------------------------------------------- running a case


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) with its SHA-256."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() or path.is_symlink()
    }


def _run(folder: Path, args: list, record: Callable[[str, object], None], kind: str) -> int:
    """Run the command line in ``folder``; check the campaign's three rules; return the code."""
    before = _snapshot(folder)
    result = CliRunner().invoke(main, [str(a) for a in args])
    after = _snapshot(folder)
    record(f"{kind}:{args[0]}", result.exit_code)
    assert result.exit_code != INTERNAL_ERROR, f"{args}: {result.output}"
    assert result.exit_code in (0, 1, 2), f"{args}: {result.output} {result.exception!r}"
    changed = [name for name in before if after.get(name) != before[name]]
    if result.exit_code == 2:
        assert after == before, f"{args} exited 2 but changed files: {changed or set(after)}"
        errors = [n for n in result.stderr.splitlines() if n.startswith("onnxprune: error:")]
        assert len(errors) == 1, result.stderr
    else:
        allowed = _outputs_of(folder, args)
        assert not [n for n in changed if n not in allowed], f"{args} changed inputs {changed}"
        strays = [name for name in after if name not in before and name not in allowed]
        assert not strays, f"{args} wrote files it was not asked for: {strays}"
    return result.exit_code


def _outputs_of(folder: Path, args: list) -> set[str]:
    """The files (relative to ``folder``) a run may write: its outputs with their ``.data``,
    and compress's default outputs."""
    flags = ("-o", "--report", "--manifest")
    targets = [Path(str(args[args.index(flag) + 1])) for flag in flags if flag in args]
    if args[0] == "compress":
        model = Path(str(args[1]))
        out = targets[0] if "-o" in args else model.with_name(f"{model.stem}.compressed.onnx")
        targets += [out, out.with_name(f"{out.stem}.report.json")]
    names = set()
    for target in targets:
        for path in (target, target.with_name(target.name + ".data")):
            normal = Path(os.path.abspath(path))  # folds "..", keeps symlinks
            if normal.is_relative_to(folder):
                names.add(str(normal.relative_to(folder)))
    return names


def _subset(source: Path, target: Path, samples: int) -> None:
    arrays = dict(np.load(source))
    np.savez(target, **{name: array[:samples] for name, array in arrays.items()})


@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once: the adult model with small data files, a copy of it as a candidate, a
    structured manifest to replay, the dynamo model with its external data, and the digits CNN
    (residual blocks, for drop-layers)."""
    base = tmp_path_factory.mktemp("base")
    shutil.copy(ADULT, base / "m.onnx")
    shutil.copy(ADULT, base / "b.onnx")
    _subset(FIXTURES / "adult_mlp-eval.npz", base / "d.npz", 200)
    _subset(FIXTURES / "adult_mlp-calibration.npz", base / "c.npz", 64)
    (base / "dynamo").mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy(DYNAMO_DIR / name, base / "dynamo" / name)
    _subset(DYNAMO_DIR / "eval.npz", base / "dynamo" / "d.npz", 64)
    shutil.copy(FIXTURES / "digits_cnn.onnx", base / "cnn.onnx")
    _subset(FIXTURES / "digits_cnn-calibration.npz", base / "cnn.npz", 32)
    args = ["prune", base / "m.onnx", "-o", base / "s.onnx", "--structured"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--manifest", base / "p.json"]])
    assert result.exit_code == 0, result.output
    (base / "s.onnx").unlink()
    for stem in ("m", "b", "cnn", "mutant", "dynamo/model"):  # onnxruntime's temporary names
        (base / f"{stem}-inferred.onnx").write_text("a user's file")
    return base


@pytest.fixture
def workspace(base_workspace: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``base_workspace`` for one case."""
    shutil.copytree(base_workspace, tmp_path / "w")
    return tmp_path / "w"


# ---------------------------------------------------------------- mutated models


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
    _run(workspace, ["inspect", model, "--json"], record_property, label)
    _run(
        workspace,
        ["prune", model, "-o", out, "--report", out.with_suffix(".json")],
        record_property,
        label,
    )
    _run(workspace, ["compress", model, "-o", out, *FAST], record_property, label)
    original = workspace / "m.onnx" if source == "adult" else model
    _run(workspace, ["verify", original, model, "--data", data, *FAST], record_property, label)


# ---------------------------------------------------------------- bad data files


def _eval(workspace: Path) -> dict[str, np.ndarray]:
    return dict(np.load(workspace / "d.npz"))


def _with(workspace: Path, **changes) -> dict[str, np.ndarray]:
    arrays = _eval(workspace)
    arrays.update(changes)
    return {name: value for name, value in arrays.items() if value is not None}


def _header(shape: tuple[int, ...], descr: str = "<f4", version: tuple[int, int] = (1, 0)):
    stream = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(stream, header)
    else:
        np.lib.format.write_array_header_2_0(stream, header)
    return stream.getvalue()


def _zip(path: Path, members: dict[str, bytes], compressed: bool = False) -> None:
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _deflate_bomb(path: Path) -> None:
    """A real zip holding a 1 GiB 'input' array of zeros, deflated to about a megabyte.

    One 16 MiB block of zeros is deflated once and repeated (each ends with a full flush, so
    the copies are independent), which takes a fraction of a second instead of deflating 1 GiB.
    """
    rows = (1 << 30) // (92 * 4)
    header, block = _header((rows, 92)), bytes(1 << 24)
    count, rest = divmod(rows * 92 * 4, len(block))
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = packer.compress(header) + packer.flush(zlib.Z_FULL_FLUSH)
    body = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    data = head + body * count + packer.compress(bytes(rest)) + packer.flush()
    crc = zlib.crc32(header)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    crc, size, name = zlib.crc32(bytes(rest), crc), len(header) + rows * 92 * 4, b"input.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, 9, 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        20,
        20,
        0,
        8,
        0,
        0,
        crc,
        len(data),
        size,
        9,
        0,
        0,
        0,
        0,
        0,
        0,
    )
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + 9, len(local) + 9 + len(data), 0
    )
    path.write_bytes(local + name + data + central + name + end)


def _npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array(stream, array, allow_pickle=True)
    return stream.getvalue()


def _write_data(workspace: Path, name: str) -> Path:
    path = workspace / f"bad-{name}.npz"
    x = _eval(workspace)["input"]
    n = len(x)
    arrays: dict[str, np.ndarray] | None = None
    if name in DATA_ARRAYS:
        arrays = DATA_ARRAYS[name](workspace, x, n)
    elif name == "truncated":
        whole = (workspace / "d.npz").read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif name == "not_a_zip":
        path.write_text("input,label\n1,2\n")
    elif name == "empty_zip":
        _zip(path, {})
    elif name == "raw_group_member":
        members = {f"{k}.npy": _npy(v) for k, v in _eval(workspace).items()}
        _zip(path, {**members, "group.sex.npy": b"not an array at all"})
    elif name == "member_without_npy_suffix":
        _zip(path, {"input": _npy(x), "label": b"raw"})
    elif name in ("crafted_shape", "crafted_shape_deflated"):
        _zip(path, {"input.npy": _header((1 << 40, 92)) + bytes(64)}, name.endswith("deflated"))
    elif name == "crafted_shape_v2":
        _zip(path, {"input.npy": _header((1 << 40, 92), version=(2, 0)) + bytes(64)})
    elif name == "bad_header":
        _zip(path, {"input.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n"})
    elif name == "deflate_bomb":
        _deflate_bomb(path)
    elif name == "duplicate_member":
        _zip(path, {"input.npy": _npy(x), "label.npy": _npy(np.zeros(n, np.int64))})
        with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning):
            archive.writestr("input.npy", _npy(x[:3]))
    if arrays is not None:
        np.savez(path, **arrays)
    return path


def _nan_rows(x: np.ndarray, value: float) -> np.ndarray:
    x = x.copy()
    x[::7] = value
    return x


DATA_ARRAYS: dict[str, Callable[[Path, np.ndarray, int], dict]] = {
    "nan_inputs": lambda w, x, n: _with(w, input=_nan_rows(x, np.nan)),
    "inf_inputs": lambda w, x, n: _with(w, input=_nan_rows(x, np.inf)),
    "all_nan": lambda w, x, n: _with(w, input=np.full_like(x, np.nan)),
    "overflow": lambda w, x, n: _with(w, input=np.full_like(x, 3e38)),
    "bytes_group": lambda w, x, n: _with(w, **{"group.sex": _eval(w)["group.sex"].astype("S")}),
    "object_group": lambda w, x, n: _with(w, **{"group.sex": _eval(w)["group.sex"].astype(object)}),
    "zero_samples": lambda w, x, n: {k: v[:0] for k, v in _eval(w).items()},
    "mismatched_lengths": lambda w, x, n: _with(w, label=_eval(w)["label"][:-1]),
    "wrong_dtype": lambda w, x, n: _with(w, input=x.astype(np.float64)),
    "big_endian": lambda w, x, n: _with(w, input=x.astype(">f4")),
    "wrong_rank": lambda w, x, n: _with(w, input=x[:, 0]),
    "wrong_width": lambda w, x, n: _with(w, input=x[:, :91]),
    "scalar_input": lambda w, x, n: {"input": np.float32(1.0)},
    "missing_input": lambda w, x, n: _with(w, input=None),
    "extra_array": lambda w, x, n: _with(w, extra=np.zeros(n)),
    "label_float": lambda w, x, n: _with(w, label=np.full(n, 0.5)),
    "label_2d": lambda w, x, n: _with(w, label=np.zeros((n, 1), np.int64)),
    "label_out_of_range": lambda w, x, n: _with(w, label=np.full(n, 7, np.int64)),
    "label_negative": lambda w, x, n: _with(w, label=np.full(n, -1, np.int64)),
    "label_bool": lambda w, x, n: _with(w, label=np.arange(n) % 2 == 0),
    "label_scalar": lambda w, x, n: _with(w, label=np.int64(1)),
    "group_2d": lambda w, x, n: _with(w, **{"group.sex": np.zeros((n, 2), np.int64)}),
    "group_float": lambda w, x, n: _with(w, **{"group.sex": np.full(n, 0.5)}),
    "group_empty_strings": lambda w, x, n: _with(w, **{"group.sex": np.full(n, "")}),
    "group_non_ascii": lambda w, x, n: _with(w, **{"group.sex": np.array(["é", "中"] * (n // 2))}),
    "group_single_value": lambda w, x, n: _with(w, **{"group.race": np.full(n, "x")}),
    "group_empty_name": lambda w, x, n: _with(w, **{"group.": np.zeros(n, np.int64)}),
    "group_complex": lambda w, x, n: _with(w, **{"group.sex": np.zeros(n, np.complex64)}),
    "fortran_order": lambda w, x, n: _with(w, input=np.asfortranarray(x)),
    "no_labels": lambda w, x, n: {"input": x},
    "one_sample": lambda w, x, n: {k: v[:1] for k, v in _eval(w).items()},
}

DATA_CASES = [
    *DATA_ARRAYS,
    "truncated",
    "not_a_zip",
    "empty_zip",
    "raw_group_member",
    "member_without_npy_suffix",
    "crafted_shape",
    "crafted_shape_deflated",
    "crafted_shape_v2",
    "bad_header",
    "deflate_bomb",
    "duplicate_member",
]


@pytest.mark.parametrize("name", DATA_CASES)
def test_bad_data_file(workspace: Path, name: str, record_property) -> None:
    data = _write_data(workspace, name)
    model, out = workspace / "m.onnx", workspace / "out.onnx"
    gates = ["--max-accuracy-drop", "0.05", "--max-group-drop", "0.1", "--min-cosine", "0.5"]
    runs = [
        ["verify", model, model, "--data", data, "--report", workspace / "r.json", *FAST],
        ["verify", model, model, "--data", data, *gates, "--json", *FAST],
        ["compress", model, "-o", out, "--data", data, "--report", workspace / "r.json", *FAST],
        ["prune", model, "-o", out, "--method", "wanda", "--calibration", data],
        [
            "prune",
            model,
            "-o",
            out,
            "--method",
            "sparsegpt",
            "--allocation",
            "owl",
            "--calibration",
            data,
        ],
        ["prune", model, "-o", out, "--structured", "--reconstruct", "--calibration", data],
    ]
    for args in runs:
        _run(workspace, args, record_property, "data")


@pytest.mark.parametrize("name", ["nan_inputs", "overflow"])
def test_non_finite_outputs_give_a_valid_report(workspace: Path, name: str) -> None:
    data, report = _write_data(workspace, name), workspace / "r.json"
    args = ["verify", workspace / "m.onnx", workspace / "m.onnx", "--data", data]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--report", report, *FAST]])
    assert result.exit_code in (0, 1), result.output
    written = json.loads(report.read_text())
    assert "verification.quality.max_abs_diff" in written["non_finite"]
    assert written["verification"]["quality"]["max_abs_diff"] is None


# ---------------------------------------------------------------- output paths against inputs

WRITES = ("o", "report", "manifest")
ADULT_READS = {
    "model": "m.onnx",
    "candidate": "b.onnx",
    "data": "d.npz",
    "calibration": "c.npz",
    "replay": "p.json",
    "cnn": "cnn.onnx",
    "cnn_calibration": "cnn.npz",
}
DYNAMO_READS = {
    "dmodel": "dynamo/model.onnx",
    "dext": "dynamo/model.onnx.data",
    "ddata": "dynamo/d.npz",
}
# Command templates: {read} and {write} slots; "dext" is read without being named.
TEMPLATES = {
    "prune": "prune {model} -o {o} --report {report} --method wanda --calibration {calibration}",
    "prune_manifest": "prune {model} -o {o} --report {report} --structured --manifest {manifest} "
    "--calibration {calibration}",
    "prune_replay": "prune {model} -o {o} --report {report} --structured --replay {replay}",
    "compress": "compress {model} -o {o} --report {report} --data {data} --calibration "
    "{calibration} --method wanda --latency-runs 0",
    "compress_manifest": "compress {model} -o {o} --structured --manifest {manifest} --data {data} "
    "--latency-runs 0",
    "verify": "verify {model} {candidate} --data {data} --report {report} --latency-runs 0",
    "quantize": "quantize {model} -o {o} --report {report} --data {data} --latency-runs 0",
    "quantize_static": "quantize {model} -o {o} --mode static --calibration {calibration} "
    "--report {report} --latency-runs 0",
    "grow": "grow {model} -o {o} --deeper /net/net.1/Relu --report {report} --data {data} "
    "--latency-runs 0",
    "drop_layers": "drop-layers {cnn} -o {o} --blocks 1 --calibration {cnn_calibration} "
    "--report {report} --latency-runs 0",
    "dynamo_prune": "prune {dmodel} -o {o} --report {report}",
    "dynamo_compress": "compress {dmodel} -o {o} --data {ddata} --report {report} --latency-runs 0",
    "dynamo_verify": "verify {dmodel} {dmodel} --data {ddata} --report {report} --latency-runs 0",
}
ALIASES = ("same", "symlink", "hardlink", "dotdot")


def _slots(template: str) -> tuple[list[str], list[str]]:
    names = [part[1:-1] for part in template.split() if part.startswith("{")]
    reads = [n for n in names if n not in WRITES] + (["dext"] if "dmodel" in names else [])
    return [n for n in names if n in WRITES], reads


def _alias(workspace: Path, target: Path, how: str) -> Path:
    if how == "same":
        return target
    if how == "dotdot":
        (workspace / "sub").mkdir(exist_ok=True)
        return workspace / "sub" / ".." / target.relative_to(workspace)
    alias = workspace / f"{how}-{target.name}"
    if how == "symlink":
        alias.symlink_to(target)
    else:
        os.link(target, alias)
    return alias


def _args(workspace: Path, template: str, **given: Path) -> list[str]:
    paths = {k: workspace / v for k, v in {**ADULT_READS, **DYNAMO_READS}.items()}
    fresh = {w: workspace / f"new-{w}.{'onnx' if w == 'o' else 'json'}" for w in WRITES}
    return template.format(**{**paths, **fresh, **given}).split()


PAIR_CASES = [
    (name, write, read, how)
    for name, template in TEMPLATES.items()
    for write in _slots(template)[0]
    for read in _slots(template)[1]
    for how in ALIASES
]
WRITE_PAIRS = [
    (name, first, second)
    for name, template in TEMPLATES.items()
    for i, first in enumerate(_slots(template)[0])
    for second in _slots(template)[0][i + 1 :]
]
OUTPUT_FAULTS = [
    (name, write, fault)
    for name, template in TEMPLATES.items()
    for write in _slots(template)[0]
    for fault in ("missing_folder", "folder", "name_too_long")
]


@pytest.mark.parametrize("name", TEMPLATES)
def test_templates_run_when_paths_are_distinct(workspace: Path, name: str, record_property):
    """The control: each template works, so its pairings below fail for the pairing alone."""
    code = _run(workspace, _args(workspace, TEMPLATES[name]), record_property, "path")
    assert code in (0, 1)


@pytest.mark.parametrize(
    ("name", "write", "read", "how"), PAIR_CASES, ids=["-".join(case) for case in PAIR_CASES]
)
def test_output_never_overwrites_an_input(
    workspace: Path, name: str, write: str, read: str, how: str, record_property
) -> None:
    source = workspace / {**ADULT_READS, **DYNAMO_READS}[read]
    target = _alias(workspace, source, how)
    args = _args(workspace, TEMPLATES[name], **{write: target})
    assert _run(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize(("name", "first", "second"), WRITE_PAIRS)
def test_two_outputs_on_one_file_are_refused(
    workspace: Path, name: str, first: str, second: str, record_property
) -> None:
    shared = workspace / "shared.out"
    args = _args(workspace, TEMPLATES[name], **{first: shared, second: shared})
    assert _run(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize(("name", "write", "fault"), OUTPUT_FAULTS)
def test_unwritable_output_is_refused_before_any_work(
    workspace: Path, name: str, write: str, fault: str, record_property
) -> None:
    target = {
        "missing_folder": workspace / "absent" / "x.out",
        "folder": workspace / "dynamo",
        "name_too_long": workspace / ("n" * 300),
    }[fault]
    args = _args(workspace, TEMPLATES[name], **{write: target})
    assert _run(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize("read", ["data", "calibration"])
def test_output_data_file_never_overwrites_an_input(
    workspace: Path, read: str, record_property
) -> None:
    """``-o X`` may write ``X.data``: refused when that is the data or calibration file."""
    shutil.copy(workspace / ADULT_READS[read], workspace / "x.onnx.data")
    args = _args(workspace, TEMPLATES["compress"], **{read: workspace / "x.onnx.data"})
    args[args.index("-o") + 1] = str(workspace / "x.onnx")
    assert _run(workspace, args, record_property, "path") == 2


@pytest.mark.parametrize("default", ["m.compressed.onnx", "m.compressed.report.json"])
def test_compress_default_outputs_never_overwrite_an_input(
    workspace: Path, default: str, record_property
) -> None:
    shutil.copy(workspace / "d.npz", workspace / default)
    args = ["compress", workspace / "m.onnx", "--data", workspace / default, *FAST]
    assert _run(workspace, args, record_property, "path") == 2


# ---------------------------------------------------------------- the file system says no


def _fail_with(code: int) -> Callable[..., None]:
    def fail(*args, **kwargs) -> None:
        raise OSError(code, os.strerror(code))

    return fail


def _previous_outputs(workspace: Path) -> list[str]:
    """Earlier outputs at the destinations: a failed run must leave them as they were."""
    for name in ("out.onnx", "r.json"):
        (workspace / name).write_text(f"previous {name}")
    return ["prune", workspace / "m.onnx", "-o", workspace / "out.onnx", "--report"]


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("onnx_ir.save", 28),  # ENOSPC while writing the model
        ("onnxprune.report.tempfile.NamedTemporaryFile", 28),  # ENOSPC writing the report
        ("onnxprune.paths.tempfile.mkdtemp", 13),  # EACCES: no permission in the folder
        ("onnxprune.paths.tempfile.mkdtemp", 30),  # EROFS: read-only file system
    ],
    ids=["model_no_space", "report_no_space", "no_permission", "read_only"],
)
def test_file_system_errors_are_input_errors(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, target: str, code: int, record_property
) -> None:
    args = [*_previous_outputs(workspace), workspace / "r.json"]
    monkeypatch.setattr(target, _fail_with(code))
    assert _run(workspace, args, record_property, "fs") == 2


def test_failed_commit_puts_previous_outputs_back(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, record_property
) -> None:
    """The model is moved into place, then moving the report fails: the model is rolled back."""
    args = [*_previous_outputs(workspace), workspace / "r.json"]
    replace, failed = os.replace, []

    def failing_replace(source, target) -> None:
        staged = ".onnxprune-stage-" in str(source) and ".previous" not in str(source)
        if Path(target) == workspace / "r.json" and staged and not failed:
            failed.append(target)
            raise OSError(5, os.strerror(5))
        replace(source, target)

    monkeypatch.setattr("onnxprune.paths.os.replace", failing_replace)
    assert _run(workspace, args, record_property, "fs") == 2
    assert failed, "the commit did not reach the report"
    assert (workspace / "out.onnx").read_text() == "previous out.onnx"


def test_file_size_limit_is_an_input_error(workspace: Path) -> None:
    """A real write failure (EFBIG under RLIMIT_FSIZE), in a subprocess."""
    resource = pytest.importorskip("resource")
    before = _snapshot(workspace)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "prune", "m.onnx", "-o", "big.onnx"],
        cwd=workspace,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=limit,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "onnxprune: error: big.onnx: File too large"
    assert _snapshot(workspace) == before


def _detector(path: Path) -> None:
    """A model whose second input is a Reshape target: made-up inputs make it fail at run time."""
    weight = onnx.numpy_helper.from_array(np.eye(16, dtype=np.float32), "w")
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
            onnx.helper.make_node("Reshape", ["h", "shape"], ["y"]),
        ],
        "detector",
        [
            onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16]),
            onnx.helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2]),
        ],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["A", "B"])],
        [weight],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def test_compress_failing_after_the_model_is_written_leaves_nothing(
    workspace: Path, record_property
) -> None:
    _detector(workspace / "detector.onnx")
    args = ["compress", workspace / "detector.onnx", "-o", workspace / "out.onnx", *FAST]
    assert _run(workspace, [*args, "--min-fan-in", "0"], record_property, "fs") == 2
