"""Read a ``.npz`` data file without trusting it.

Every member's ``.npy`` header is read first (shape and dtype, before any array is allocated):
a member that is not an ``.npy`` array, an object array, a shape the member's bytes cannot hold
(a crafted header asking for terabytes) and archives that expand beyond ``MAX_NPZ_BYTES`` or
``MAX_EXPANSION`` times their size on disk (a deflate bomb) are refused with an ``InputError``
naming the file and the array. Only then are the arrays loaded.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from onnxprune.errors import InputError, first_line

__all__ = ["MAX_EXPANSION", "MAX_NPZ_BYTES", "MIN_ALLOWANCE", "npz_allowance", "read_npz"]

# Decompressed bytes one data file may hold: at most MAX_EXPANSION times its size on disk
# (a deflate bomb of zeros expands about 1000x), but always MIN_ALLOWANCE, and never more than
# MAX_NPZ_BYTES.
MAX_NPZ_BYTES = 4 << 30
MAX_EXPANSION = 200
MIN_ALLOWANCE = 256 << 20

_READ_ERRORS = (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, zlib.error)


def npz_allowance(file_size: int) -> int:
    """How many decompressed bytes a data file of ``file_size`` bytes may hold."""
    return min(MAX_NPZ_BYTES, max(MIN_ALLOWANCE, MAX_EXPANSION * file_size))


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def _array_name(member: str) -> str:
    return member[: -len(".npy")] if member.endswith(".npy") else member


def _check_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a member that is not a plain ``.npy`` array its stored bytes can hold."""
    name = _array_name(info.filename)
    with archive.open(info) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as error:
            raise InputError(
                f"{path}: array '{name}' is not a readable .npy array ({error})"
            ) from error
        header = handle.tell()
    if dtype.hasobject:
        raise InputError(
            f"{path}: holds object arrays ('{name}'); store strings as fixed-width unicode "
            "('U') arrays"
        )
    needed = header + math.prod(shape) * dtype.itemsize
    if needed > info.file_size:
        raise InputError(
            f"{path}: array '{name}' declares shape {shape} of {dtype} ({_mib(needed)}), but "
            f"holds only {_mib(info.file_size)}"
        )


def _check_archive(path: Path, archive: zipfile.ZipFile) -> None:
    members = archive.infolist()
    total = sum(info.file_size for info in members)
    allowance = npz_allowance(path.stat().st_size)
    if total > allowance:
        raise InputError(
            f"{path}: arrays expand to {_mib(total)}, more than the {_mib(allowance)} allowed "
            f"for this file ({MAX_EXPANSION}x its size, at most {_mib(MAX_NPZ_BYTES)})"
        )
    for info in members:
        _check_member(path, archive, info)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` file at ``path``, after checking every header and size."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such data file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_archive(path, archive)
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except _READ_ERRORS as error:
        detail = first_line(error)
        raise InputError(f"{path}: not a readable .npz file ({detail})") from error
