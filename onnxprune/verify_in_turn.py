"""Verifying big models one at a time, each a slice at a time.

Two sessions of a model with gigabytes of weights do not fit where one does; above
``TOGETHER_BYTES`` (the two models' files together) ``verify.verify_models`` runs the baseline,
then the candidate, each through ``outputs_of``: the model is run a slice of its weights at a
time (``onnxprune.staged``), so onnxruntime never holds all of it; a model that cannot be
sliced is run whole. ``described`` gives what the checks need of a model (inputs, outputs,
their types and shapes) from a session that does not pack the weights and never runs, so
nothing but the graph is read.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxprune.data import Dataset
from onnxprune.errors import InputError, first_line
from onnxprune.model_io import load_model, model_files
from onnxprune.runtime import create_session, fixed_batch, run_dataset
from onnxprune.staged import outputs_in_slices

__all__ = [
    "TOGETHER_BYTES",
    "Described",
    "described",
    "files_bytes",
    "first_batch",
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


def files_bytes(path: str | os.PathLike) -> int:
    """Bytes of a model's files on disk (the graph and its external data)."""
    return sum(f.stat().st_size for f in model_files(path))


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


def outputs_of(
    path: str | os.PathLike, meta: Described, dataset: Dataset, batch: int, threads: int = 0
) -> dict[str, np.ndarray]:
    """Every tensor output of the model at ``path`` on ``dataset``, run a slice at a time (or
    whole when it cannot be sliced), in batches of ``batch`` (the model's own if fixed)."""
    names = [o.name for o in meta.get_outputs() if o.type.startswith("tensor(")]
    batch = fixed_batch(meta) or batch
    with tempfile.TemporaryDirectory(prefix="onnxprune-verify-") as folder:
        outputs = outputs_in_slices(load_model(path), dataset, batch, names, Path(folder), threads)
    if outputs is None:
        return run_dataset(create_session(path, threads), dataset, batch)
    return outputs


def first_batch(dataset: Dataset, batch: int) -> Dataset:
    """The first ``batch`` samples of ``dataset``'s inputs."""
    return Dataset(dataset.slice(0, batch), sample_axes=dataset.sample_axes)
