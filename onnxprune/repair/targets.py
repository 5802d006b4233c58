"""What the student learns from: the teacher's tensors on the same chunks, run in onnxruntime,
and checks that the student and teacher line up and that the interpreter computes the student
as onnxruntime does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from onnxprune.calibration import capture_model
from onnxprune.errors import InputError
from onnxprune.repair.chunks import Chunk
from onnxprune.repair.program import GraphProgram
from onnxprune.runtime import create_session

__all__ = ["check_interpreter", "check_pair", "mean_squares", "teacher_targets"]

# The interpreter's outputs must match onnxruntime's within this, relative to the largest value.
INTERPRETER_TOLERANCE = 1e-3


def _signature(values) -> list[tuple[str, str]]:
    return [(v.name, str(v.dtype)) for v in values]


def check_pair(student: ir.Model, teacher: ir.Model) -> None:
    """Refuse a teacher whose inputs or outputs differ from the student's."""
    inputs = [v for v in student.graph.inputs if v.name not in student.graph.initializers]
    teacher_inputs = [v for v in teacher.graph.inputs if v.name not in teacher.graph.initializers]
    if _signature(inputs) != _signature(teacher_inputs):
        raise InputError("the teacher's inputs differ from the student's (names or types)")
    if _signature(student.graph.outputs) != _signature(teacher.graph.outputs):
        raise InputError("the teacher's outputs differ from the student's (names or types)")


def teacher_targets(
    teacher: ir.Model, names: list[str], chunks: list[Chunk], threads: int = 1
) -> None:
    """Run the teacher over every chunk; store ``names`` in each chunk's ``targets``."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-repair-") as folder:
        session = create_session(capture_model(teacher, set(names), Path(folder)), threads)
        for chunk in chunks:
            results = session.run(names, chunk.feed)
            chunk.targets = {
                n: torch.from_numpy(np.asarray(r)) for n, r in zip(names, results, strict=True)
            }


def mean_squares(names: list[str], chunks: list[Chunk]) -> dict[str, float]:
    """Each target's mean square over the chunks' real positions (the loss scale)."""
    scales = {}
    for name in names:
        total, count = 0.0, 0
        for chunk in chunks:
            value = chunk.targets[name].double().numpy()
            if chunk.keep is not None and value.shape[: chunk.keep.ndim] == chunk.keep.shape:
                value = value[chunk.keep]
            total += float(np.square(value).sum())
            count += value.size
        scales[name] = max(total / max(count, 1), 1e-12)
    return scales


def check_interpreter(program: GraphProgram, student_path: str | os.PathLike, chunk: Chunk) -> None:
    """Refuse to train when the torch interpreter disagrees with onnxruntime on the student."""
    session = create_session(student_path, 1)
    reference = dict(zip(program.outputs, session.run(program.outputs, chunk.feed), strict=True))
    with torch.no_grad():
        feed = {name: torch.from_numpy(array) for name, array in chunk.feed.items()}
        computed = program.run(feed, 0, len(program.nodes))
    for name, expected in reference.items():
        got = computed[name].numpy()
        if got.shape != expected.shape:
            raise InputError(f"repair's torch interpreter gives output '{name}' shape {got.shape}")
        if expected.dtype.kind != "f" or not expected.size:
            continue
        scale = max(1.0, float(np.abs(expected).max()))
        difference = float(np.abs(got.astype(np.float64) - expected).max())
        if not difference <= INTERPRETER_TOLERANCE * scale:
            raise InputError(
                f"repair's torch interpreter differs from onnxruntime on output '{name}' "
                f"(max abs difference {difference:.3g}): refusing to train"
            )
