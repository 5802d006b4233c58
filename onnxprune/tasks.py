"""What a model's scored output means, so the verdict uses metrics that mean something for it.

Top-1 agreement (argmax over the last axis) and accuracy only mean something for a classifier;
on a sentence embedding or a detection map they are noise. ``resolve_task`` takes the task the
user named, or infers it from evidence it can state, and returns it with that evidence:

* ``classification``: labels were given, the output holds integers (class ids), its rows are
  probabilities (non-negative, summing to 1), or its name says so (logits, probs, class, ...);
* ``embedding``: the name says so (embedding, hidden state, pooled, features, ...);
* ``detection``: the name says so (boxes, bbox, anchors, detections, ...);
* otherwise the task is unknown: agreement is compared by cosine and max abs difference only,
  and the report says to name the task with ``--task``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from onnxprune.errors import InputError

__all__ = ["TASKS", "Task", "probability_rows", "resolve_task"]

TASKS = ("classification", "embedding", "regression", "detection")

_NAMED = (
    ("classification", re.compile(r"logit|prob|class|label|score|cls|pred", re.IGNORECASE)),
    (
        "embedding",
        re.compile(r"embed|hidden|pool|feature|sentence|vector|encod|token_emb", re.IGNORECASE),
    ),
    ("detection", re.compile(r"box|bbox|anchor|detect|dets\b|heatmap|mask", re.IGNORECASE)),
)


@dataclass(frozen=True)
class Task:
    """The scored output's task (None when unknown) and how it was decided."""

    name: str | None
    evidence: str

    @property
    def classification(self) -> bool:
        return self.name == "classification"

    def to_dict(self) -> dict:
        return {"task": self.name, "evidence": self.evidence}


def probability_rows(output: np.ndarray) -> bool:
    """Whether every row (last axis) of a float output is non-negative and sums to 1."""
    if output.dtype.kind != "f" or output.ndim < 2 or output.shape[-1] < 2 or not output.size:
        return False
    rows = output.reshape(-1, output.shape[-1]).astype(np.float64)
    return bool(np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def resolve_task(
    declared: str | None, output_name: str, output: np.ndarray, has_labels: bool
) -> Task:
    """The task of the output ``output_name`` (a batch of its values in ``output``)."""
    if declared is not None:
        if declared not in TASKS:
            raise InputError(f"unknown task '{declared}' (choose from {', '.join(TASKS)})")
        if has_labels and declared != "classification":
            raise InputError(
                f"the data has a 'label' array, which needs --task classification (not {declared})"
            )
        return Task(declared, "given by --task")
    if has_labels:
        return Task("classification", "the data has labels")
    if output.dtype.kind in "iub":
        return Task("classification", "the output holds integers (class ids)")
    if probability_rows(output):
        return Task("classification", "the output rows are probabilities")
    for task, pattern in _NAMED:
        if pattern.search(output_name):
            return Task(task, f"the output is named '{output_name}'")
    return Task(None, f"not inferred from output '{output_name}'; name it with --task")
