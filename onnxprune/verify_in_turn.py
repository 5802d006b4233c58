"""Verifying big models one at a time, each a slice at a time.

Two sessions of a model with gigabytes of weights do not fit where one does; above
``TOGETHER_BYTES`` (the two models' files together) ``verify.verify_models`` runs the baseline,
then the candidate: the model is run a slice of its weights at a time (``onnxprune.staged``),
so onnxruntime never holds all of it; a model that cannot be sliced is run whole. The
baseline's outputs (``outputs_of``) are held, and kept for the next verification against the
same baseline and data; the candidate's are compared batch by batch as its last slice makes
them (``compare_with``, ``onnxprune.comparison``) and not held. ``described`` gives what the
checks need of a model (inputs, outputs, their types and shapes) from a session that does not
pack the weights and never runs, so nothing but the graph is read.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune.comparison import OutputComparison
from onnxprune.data import Dataset
from onnxprune.errors import InputError, first_line
from onnxprune.model_io import model_files
from onnxprune.runtime import create_session, fixed_batch, run_batches, run_dataset
from onnxprune.staged import outputs_in_slices

__all__ = [
    "TOGETHER_BYTES",
    "Described",
    "compare_with",
    "described",
    "files_bytes",
    "files_of",
    "outputs_of",
]

TOGETHER_BYTES = 1 << 30


@dataclass(frozen=True)
class _Arg:
    name: str
    type: str
    shape: list


class Described:
    """A closed session's inputs and outputs, with the session's ``get_inputs``/``get_outputs``
    (what ``runtime.fixed_batch`` and ``verify._compatible`` read)."""

    def __init__(self, session) -> None:
        self._inputs = [_Arg(a.name, a.type, list(a.shape)) for a in session.get_inputs()]
        self._outputs = [_Arg(a.name, a.type, list(a.shape)) for a in session.get_outputs()]

    def get_inputs(self) -> list[_Arg]:
        return self._inputs

    def get_outputs(self) -> list[_Arg]:
        return self._outputs


def _stamp(path: str | os.PathLike) -> tuple:
    """The model file as it is now: a model is rewritten as a whole (``save_model``), so a
    rewritten model is a new file."""
    stat = os.stat(path)
    return (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _files(_stamp: tuple, path: str) -> list[Path]:
    """``model_files`` read from the graph's external data entries alone (no weights, no
    checks: a big graph takes a second to check); a file that does not read cleanly, or whose
    data files are missing, goes through ``model_files``, which says what is wrong."""
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception:  # protobuf and onnx raise several types for a damaged file
        return model_files(path)
    folder = Path(path).parent
    data = {
        folder / entry.value
        for tensor in proto.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    if not all(file.is_file() for file in data):
        return model_files(path)
    return [Path(path), *sorted(data)]


def files_of(path: str | os.PathLike) -> list[Path]:
    """``model_io.model_files`` of the model at ``path``, read once per version of the file."""
    files = _files(_stamp(path), str(path))
    if not all(file.is_file() for file in files):  # removed since: say what is missing
        return model_files(path)
    return list(files)


def files_bytes(path: str | os.PathLike) -> int:
    """Bytes of a model's files on disk (the graph and its external data)."""
    return sum(f.stat().st_size for f in files_of(path))


def described(path: str | os.PathLike, threads: int = 0) -> Described:
    """The inputs and outputs of the model at ``path`` (its weights are not packed or read)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 4
    options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        message = first_line(error)
        raise InputError(f"{path}: onnxruntime cannot load the model ({message})") from error
    return Described(session)


def _identity(path: str | os.PathLike) -> tuple:
    """The model's files as they are now (path, size, modification time)."""
    return tuple(_stamp(f) for f in files_of(path))


@dataclass
class _Held:
    """A baseline's outputs on the first ``samples`` samples of ``dataset``, at ``batch``."""

    identity: tuple
    dataset: Dataset
    batch: int
    samples: int
    outputs: dict[str, np.ndarray]


_HELD: list[_Held] = []  # the last baseline run through outputs_of: at most one


def _sliced(path, meta: Described, dataset: Dataset, batch: int, threads: int, on_batch=None):
    names = [o.name for o in meta.get_outputs() if o.type.startswith("tensor(")]
    with tempfile.TemporaryDirectory(prefix="onnxprune-verify-") as folder:
        model = ir.load(path)  # checked when it was read or written by the command
        return outputs_in_slices(model, dataset, batch, names, Path(folder), threads, on_batch)


def _run(path, meta: Described, dataset: Dataset, batch: int, threads: int) -> dict:
    outputs = _sliced(path, meta, dataset, batch, threads)
    if outputs is None:
        return run_dataset(create_session(path, threads), dataset, batch)
    return outputs


def outputs_of(
    path: str | os.PathLike,
    meta: Described,
    dataset: Dataset,
    batch: int,
    threads: int = 0,
    limit: int | None = None,
) -> dict[str, np.ndarray]:
    """Every tensor output of the model at ``path`` on ``dataset`` (the whole batches holding
    its first ``limit`` samples), run a slice at a time (or whole when it cannot be sliced),
    in batches of ``batch`` (the model's own if fixed).

    The outputs are held for the next call on the same model files, dataset object and batch:
    the samples they cover are not run again (a baseline's first batch, run to find its
    task, and a baseline verified against several candidates run once)."""
    batch = fixed_batch(meta) or batch
    total = dataset.samples if limit is None else min(-(-limit // batch) * batch, dataset.samples)
    identity = _identity(path)
    held = next(
        (h for h in _HELD if (h.identity, h.batch) == (identity, batch) and h.dataset is dataset),
        None,
    )
    done = 0 if held is None else min(held.samples, total)
    if done < total:
        rest = dataset
        if (done, total) != (0, dataset.samples):
            part = dataset.slice(done, total)
            rest = Dataset(part, synthetic=dataset.synthetic, sample_axes=dataset.sample_axes)
        outputs = _run(path, meta, rest, batch, threads)
        if done:
            outputs = {n: np.concatenate([held.outputs[n][:done], v]) for n, v in outputs.items()}
    else:
        outputs = {name: values[:total] for name, values in held.outputs.items()}
    if held is None or total > held.samples:
        _HELD[:] = [_Held(identity, dataset, batch, total, outputs)]
    return outputs


def compare_with(
    base_outputs: dict[str, np.ndarray],
    path: str | os.PathLike,
    meta: Described,
    dataset: Dataset,
    batch: int,
    threads: int,
    comparison: OutputComparison,
) -> None:
    """Run the model at ``path`` as ``outputs_of`` does and hand each batch of each output,
    with the same rows of ``base_outputs``, to ``comparison`` as soon as it is made (the
    model's outputs are not held)."""
    batch = fixed_batch(meta) or batch

    def add(name: str, start: int, values: np.ndarray) -> None:
        comparison.add(name, base_outputs[name][start : start + len(values)], values)

    if _sliced(path, meta, dataset, batch, threads, add) is not None:
        return
    for start, results in run_batches(create_session(path, threads), dataset, batch):
        for name in comparison.names:
            add(name, start, results[name])
