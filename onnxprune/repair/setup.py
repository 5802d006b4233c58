"""Everything the engine needs, prepared and checked before any training.

``prepare`` loads the student and teacher (normalised), refuses what repair cannot train
(quantized graphs, ops without a torch rule, non-float32 weights, mismatched teacher, group
balancing without groups), checks the interpreter against onnxruntime on the student, splits and
chunks the calibration data, cuts the graph into segments and runs the teacher for its targets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import torch

from onnxprune.calibration import detect_mask_input
from onnxprune.data import Dataset, index_bounds, input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.repair.augment import augment
from onnxprune.repair.chunks import Chunk, make_chunks, split_samples
from onnxprune.repair.losses import Objective
from onnxprune.repair.options import RepairOptions
from onnxprune.repair.program import GraphProgram
from onnxprune.repair.segments import Segment, float_outputs, plan_segments
from onnxprune.repair.targets import (
    check_interpreter,
    check_pair,
    mean_squares,
    teacher_targets,
)
from onnxprune.repair.trainable import TrainableTensor, find_trainable, refuse_quantized
from onnxprune.tasks import resolve_task

__all__ = ["Setup", "prepare"]


@dataclass
class Setup:
    """The student program, its trainable weights, the data and the plan."""

    options: RepairOptions
    program: GraphProgram
    trainable: dict[str, TrainableTensor]
    params: dict[str, torch.nn.Parameter]
    masks: dict[str, torch.Tensor]
    segments: list[Segment]
    notes: list[dict]
    train: list[Chunk]
    validation: list[Chunk]
    test: list[Chunk]
    objective: Objective
    outputs: tuple[str, ...]
    scales: dict[str, float]
    tasks: dict[str, str | None]
    probabilities: dict[str, bool]
    originals: int = 0  # the leading training chunks of real samples (then augmented copies)
    changed: frozenset[str] = frozenset()  # trainable tensors that differ from the teacher's

    @property
    def chunks(self) -> list[Chunk]:
        return self.train + self.validation + self.test

    @property
    def calibration(self) -> list[Chunk]:
        """The training chunks of real (not augmented) samples: the calibration loss's."""
        return self.train[: self.originals] or self.train


def _objective(options: RepairOptions, data: Dataset) -> Objective:
    if not options.group_balanced:
        return Objective()
    if not data.groups:
        raise InputError(
            "--group-balanced needs 'group.<attribute>' arrays in the calibration data"
        )
    if any(data.axis(name) != 0 for name in data.inputs):
        raise InputError("--group-balanced needs every input's samples on axis 0")
    return Objective(data.groups, options.beta)


def _chunks(
    options: RepairOptions, data: Dataset, student: ir.Model
) -> tuple[Dataset, list[Chunk], list[Chunk], list[Chunk]]:
    """Split, augment the training part, and chunk; returns the (grown) data too."""
    mask = detect_mask_input(data, options.mask_input)
    if options.validation is not None:
        return _separate(options, data, student, mask)
    train, validation, test = split_samples(data.samples, options.held_out, options.seed)
    if options.augment and any(data.axis(name) != 0 for name in data.inputs):
        raise InputError("--augment needs every input's samples on axis 0")
    original = len(train)
    bounds = index_bounds(student)
    data, train = augment(
        data, train, options.augment, options.augment_rate, bounds, mask, options.seed
    )
    parts = [make_chunks(data, p, options.batch_size, mask, True) for p in (validation, test)]
    return data, _train_chunks(data, train, original, options.batch_size, mask), *parts


def _train_chunks(data: Dataset, train: np.ndarray, original: int, batch: int, mask) -> list:
    """Chunks of the ``original`` real training samples first, then of the augmented copies
    (so the calibration loss can be measured on real samples alone)."""
    return make_chunks(data, train[:original], batch, mask, True) + make_chunks(
        data, train[original:], batch, mask, True
    )


def _separate(options: RepairOptions, data: Dataset, student: ir.Model, mask: str | None):
    """Every calibration sample trains; the ``validation`` file's samples, appended after them,
    are split in halves (seeded) into validation and test."""
    extra = load_dataset(options.validation, input_specs(student))
    if extra.samples < 2:
        raise InputError(f"{options.validation}: needs at least 2 samples (validation and test)")
    if set(extra.groups) != set(data.groups) or (extra.labels is None) != (data.labels is None):
        raise InputError("--validation must have the same label and group arrays as --calibration")
    held = data.samples + np.random.default_rng(options.seed).permutation(extra.samples)
    merged = Dataset(
        inputs={n: np.concatenate([a, extra.inputs[n]]) for n, a in data.inputs.items()},
        labels=None if data.labels is None else np.concatenate([data.labels, extra.labels]),
        groups={n: np.concatenate([c, extra.groups[n]]) for n, c in data.groups.items()},
        source=data.source,
        sample_axes=data.sample_axes,
    )
    middle = (len(held) + 1) // 2
    validation, test = np.sort(held[:middle]), np.sort(held[middle:])
    bounds = index_bounds(student)
    train = np.arange(data.samples)
    merged, train = augment(
        merged, train, options.augment, options.augment_rate, bounds, mask, options.seed
    )
    parts = [make_chunks(merged, p, options.batch_size, mask, True) for p in (validation, test)]
    return merged, _train_chunks(merged, train, data.samples, options.batch_size, mask), *parts


def _is_probability(tensor: torch.Tensor) -> bool:
    if tensor.dim() < 2 or tensor.shape[-1] < 2 or not tensor.dtype.is_floating_point:
        return False
    rows = tensor.double()
    return bool((rows >= 0).all() and torch.allclose(rows.sum(-1), torch.ones(1).double(), 0, 1e-3))


def _parameters(program: GraphProgram, trainable: dict[str, TrainableTensor]):
    params = {
        name: torch.nn.Parameter(program.constants[name].clone()) for name in sorted(trainable)
    }
    masks = {name: params[name].detach() != 0 for name, t in trainable.items() if t.masked}
    return params, masks


def _changed(student: ir.Model, teacher: ir.Model, names) -> frozenset[str]:
    """The ``names`` whose student initializer is not the teacher's (missing there, another
    shape or other values)."""
    theirs = teacher.graph.initializers
    changed = set()
    for name in names:
        other = theirs.get(name)
        if other is None or other.const_value is None:
            changed.add(name)
            continue
        mine = student.graph.initializers[name].const_value.numpy()
        if not np.array_equal(mine, other.const_value.numpy()):  # a shape change differs too
            changed.add(name)
    return frozenset(changed)


def prepare(
    student: ir.Model,
    student_path: str | os.PathLike,
    teacher: ir.Model,
    data: Dataset,
    options: RepairOptions,
) -> Setup:
    """Check and prepare a repair of ``student`` towards ``teacher`` on ``data``."""
    refuse_quantized(student)
    check_pair(student, teacher)
    trainable = find_trainable(student, options.train_zeros)
    program = GraphProgram(student)
    real = data.samples
    data, train, validation, test = _chunks(options, data, student)
    objective = _objective(options, data)
    check_interpreter(program, student_path, train[0])
    teacher_names = {v.name for node in teacher.graph for v in node.outputs}
    segments, notes = plan_segments(student, program, teacher_names, set(trainable))
    outputs = float_outputs(student)
    if not outputs:
        raise InputError("the model has no floating-point output to learn from")
    names = sorted({n for s in segments for n in s.targets} | set(outputs))
    teacher_targets(teacher, names, train + validation + test)
    for chunk in train + validation + test:
        chunk.env = {name: torch.from_numpy(array) for name, array in chunk.feed.items()}
    first = train[0].targets
    has_labels = data.labels is not None
    tasks = {n: resolve_task(None, n, first[n].numpy(), has_labels).name for n in outputs}
    params, masks = _parameters(program, trainable)
    changed = _changed(student, teacher, trainable) if options.changed_only else frozenset()
    if options.changed_only and not changed:
        raise InputError(
            "--changed-only: no trainable weight differs from the teacher's, so nothing would "
            "train (a student with blocks dropped keeps its weights: repair it without the flag)"
        )
    return Setup(
        options=options,
        program=program,
        trainable=trainable,
        params=params,
        masks=masks,
        segments=segments,
        notes=notes,
        train=train,
        validation=validation,
        test=test,
        objective=objective,
        outputs=outputs,
        scales=mean_squares(names, train),
        tasks=tasks,
        probabilities={n: _is_probability(first[n]) for n in outputs},
        originals=sum(1 for chunk in train if chunk.indices.max() < real),
        changed=changed,
    )
