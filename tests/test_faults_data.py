"""The fault campaign, part 2: bad data files (see ``test_faults.py``).

NaN, infinite and overflowing inputs, byte and object group columns, raw zip members, crafted
``.npy`` headers asking for terabytes, a real 1 GiB deflate bomb, and the usual shape, dtype and
label mistakes, each run through verify, compress and data-aware prune.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fault_helpers import FAST, run_case

from cli.main import main


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
        run_case(workspace, args, record_property, "data")


@pytest.mark.parametrize("name", ["nan_inputs", "overflow"])
def test_non_finite_outputs_give_a_valid_report(workspace: Path, name: str) -> None:
    data, report = _write_data(workspace, name), workspace / "r.json"
    args = ["verify", workspace / "m.onnx", workspace / "m.onnx", "--data", data]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--report", report, *FAST]])
    assert result.exit_code in (0, 1), result.output
    written = json.loads(report.read_text())
    assert "verification.quality.max_abs_diff" in written["non_finite"]
    assert written["verification"]["quality"]["max_abs_diff"] is None
