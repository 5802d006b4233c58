"""Verifying big models one at a time: what verification keeps of a session once it is gone.

Two sessions of a model with gigabytes of weights do not fit where one does; above
``TOGETHER_BYTES`` (the two models' files together) ``verify.verify_models`` runs the baseline,
drops its session, then runs the candidate. ``Described`` keeps the input and output
descriptions the checks after the run need (names, types, shapes), copied out of onnxruntime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from onnxprune.model_io import model_files

__all__ = ["TOGETHER_BYTES", "Described", "files_bytes"]

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
