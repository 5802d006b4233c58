"""File sizes of a model as stored and as compressed (pruned zeros compress well)."""

from __future__ import annotations

import zlib
from pathlib import Path

__all__ = ["model_size"]

_CHUNK = 1 << 20


def _deflated_size(path: Path) -> int:
    compressor = zlib.compressobj(6)
    total = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def model_size(files: list[Path]) -> dict:
    """Bytes on disk and bytes after DEFLATE (what a zip of the files would hold), summed."""
    return {
        "files": [str(f) for f in files],
        "bytes": sum(f.stat().st_size for f in files),
        "compressed_bytes": sum(_deflated_size(f) for f in files),
    }
