"""Run models in onnxruntime: sessions, batched inference over a dataset.

Sessions are CPU-only with an explicit intra-op thread count (0 lets onnxruntime choose), so a
report can say exactly how its numbers were measured.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxprune.data import Dataset
from onnxprune.errors import InputError, first_line

__all__ = [
    "check_parts",
    "create_session",
    "fixed_batch",
    "pinned_batch",
    "run_batches",
    "run_dataset",
    "run_feed",
    "tensor_outputs",
]


def create_session(path: str | os.PathLike, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session for the model at ``path``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures are reported by onnxprune, in one line
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        message = first_line(error)
        raise InputError(f"{Path(path)}: onnxruntime cannot load the model ({message})") from error


def fixed_batch(session: ort.InferenceSession) -> int | None:
    """The batch size every input pins on its first axis, or None if the batch is dynamic."""
    return pinned_batch(i.shape[0] for i in session.get_inputs() if i.shape)


def pinned_batch(first_dims: Iterable[object]) -> int | None:
    """The one integer among the inputs' first dims (symbolic ones ignored), else None."""
    sizes = {dim for dim in first_dims if isinstance(dim, int)}
    return sizes.pop() if len(sizes) == 1 else None


def run_dataset(
    session: ort.InferenceSession,
    dataset: Dataset,
    batch_size: int = 64,
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """Run every sample (or the first ``limit``) through ``session``; outputs are concatenated
    along the sample axis."""
    names = tensor_outputs(session)
    pieces: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for _, results in run_batches(session, dataset, batch_size, limit):
        for name in names:
            pieces[name].append(results[name])
    return {name: _concatenate(name, parts) for name, parts in pieces.items()}


def run_batches(
    session: ort.InferenceSession,
    dataset: Dataset,
    batch_size: int = 64,
    limit: int | None = None,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(first sample, {tensor output: values})`` for each batch, in order (the session's
    fixed batch size if it has one), so a caller can use each batch and let it go."""
    batch_size = fixed_batch(session) or batch_size
    names = tensor_outputs(session)
    total = dataset.samples if limit is None else min(limit, dataset.samples)
    for start in range(0, total, batch_size):
        feed = dataset.slice(start, start + batch_size)
        try:
            results = session.run(names, feed)
        except Exception as error:  # onnxruntime raises its own exception types
            message = first_line(error)
            hint = (
                " (made-up inputs: give real ones with --data, or their shapes with --input-shape)"
                if dataset.synthetic
                else ""
            )
            raise InputError(f"onnxruntime failed on samples {start}+: {message}{hint}") from error
        yield start, {name: np.asarray(r) for name, r in zip(names, results, strict=True)}


def run_feed(
    session: ort.InferenceSession, names: list[str], feed: dict, start: int = 0
) -> list[np.ndarray]:
    """``session.run`` on one batch; an onnxruntime failure on the user's model and data is an
    ``InputError`` naming the samples."""
    try:
        return session.run(names, feed)
    except Exception as error:  # onnxruntime raises its own exception types
        message = first_line(error)
        raise InputError(f"onnxruntime failed on samples {start}+: {message}") from error


def tensor_outputs(session: ort.InferenceSession) -> list[str]:
    """Names of the outputs that are tensors (sequences and maps cannot be compared per sample)."""
    return [o.name for o in session.get_outputs() if o.type.startswith("tensor(")]


def _concatenate(name: str, parts: list[np.ndarray]) -> np.ndarray:
    check_parts(name, parts)
    return np.concatenate(parts, axis=0)


def check_parts(name: str, parts: list[np.ndarray]) -> None:
    """Refuse batches of output ``name`` that cannot be lined up per sample (none, 0-d, or
    with different shapes past the sample axis)."""
    if not parts:
        raise InputError(f"no samples reached output '{name}' (the data has none)")
    if any(part.ndim == 0 for part in parts):
        raise InputError(f"output '{name}' has no sample axis; it cannot be compared per sample")
    if len({part.shape[1:] for part in parts}) > 1:
        shapes = sorted({str(part.shape) for part in parts})
        raise InputError(
            f"output '{name}' changes shape between batches ({', '.join(shapes[:3])}): its "
            "values cannot be lined up per sample (try --batch-size 1, or give --data)"
        )
