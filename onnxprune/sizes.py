"""File sizes of a model as stored and as compressed (pruned zeros compress well).

Files above ``SAMPLED_ABOVE`` bytes are not deflated whole (a 2 GB model would take minutes):
``SAMPLE_CHUNKS`` evenly spaced 1 MiB chunks are, and their ratio is applied to the file's
size; ``model_size`` then says ``compressed_bytes_estimated``.
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path

__all__ = ["model_size"]

_CHUNK = 1 << 20
SAMPLED_ABOVE = 256 << 20
SAMPLE_CHUNKS = 16


def _deflated_size(path: Path) -> int:
    stat = path.stat()
    return _deflated_size_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)


@functools.lru_cache(maxsize=64)
def _deflated_size_of(path: str, size: int, mtime_ns: int, inode: int) -> int:
    """Cached by the file's identity and version: compress verifies the same baseline at every
    stage, and DEFLATE of a 54 MB model takes 13 s on these machines."""
    if size > SAMPLED_ABOVE:
        return _sampled_deflated_size(path, size)
    compressor = zlib.compressobj(6)
    total = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def _sampled_deflated_size(path: str, size: int) -> int:
    """DEFLATE size of a big file estimated from evenly spaced chunks, each deflated alone."""
    raw = deflated = 0
    with open(path, "rb") as handle:
        for index in range(SAMPLE_CHUNKS):
            handle.seek((size - _CHUNK) * index // (SAMPLE_CHUNKS - 1))
            chunk = handle.read(_CHUNK)
            raw += len(chunk)
            deflated += len(zlib.compress(chunk, 6))
    return round(size * deflated / raw)


def model_size(files: list[Path]) -> dict:
    """Bytes on disk and bytes after DEFLATE (what a zip of the files would hold), summed."""
    sizes = {
        "files": [str(f) for f in files],
        "bytes": sum(f.stat().st_size for f in files),
        "compressed_bytes": sum(_deflated_size(f) for f in files),
    }
    if any(f.stat().st_size > SAMPLED_ABOVE for f in files):
        sizes["compressed_bytes_estimated"] = f"from {SAMPLE_CHUNKS} chunks of 1 MiB per file"
    return sizes
