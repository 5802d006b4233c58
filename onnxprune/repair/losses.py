"""Per-sample losses between student and teacher tensors, and the objective that combines them.

* Block outputs: squared error over real positions, divided by the teacher tensor's mean
  square on the training samples (a relative MSE: 0 is exact, 1 is an error as large as the
  signal), so losses of different blocks read alike.
* Model outputs, by task (``onnxprune.tasks``): classification logits (or probability rows)
  use KL(teacher || student) plus, when the data has labels, ``label_weight`` x cross-entropy;
  embeddings use relative MSE plus 1 - cosine along the last axis; anything else relative MSE.
* ``Objective`` turns per-sample losses into the number minimised: their mean; or, with
  groups (``--group-balanced``), a mean that weights every group of every attribute equally
  plus ``beta`` x the largest group's mean loss (minimise L + beta * max-group-loss).
  Measured on a whole part (``__call__``) the max is exact. In a training step (``step``) a
  mini-batch holds one or two members of a small group, so the batch's own max would chase
  whichever single sample happens to be worst (on Adult it made the worst-group drop larger
  than without balancing); the step instead picks the group whose running mean loss (an
  exponential average over the steps, as online group DRO does) is the largest among the
  groups in the batch, and adds ``beta`` x that group's batch mean.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SMOOTHING", "Objective", "output_loss", "tensor_loss"]

SMOOTHING = 0.9  # weight of the past in a group's running mean loss (per training step)


def _positions(tensor: torch.Tensor, keep: np.ndarray | None) -> torch.Tensor | None:
    """A 0/1 weight over ``tensor``'s leading axes that mark real positions, if they match."""
    if keep is None or tuple(tensor.shape[: keep.ndim]) != keep.shape:
        return None
    weight = torch.from_numpy(keep.astype(np.float32))
    return weight.reshape(*keep.shape, *([1] * (tensor.dim() - keep.ndim)))


def _per_sample(values: torch.Tensor, weight: torch.Tensor | None, samples: int) -> torch.Tensor:
    """Mean of ``values`` per sample (over real positions); one shared value when the tensor
    has no sample axis of the chunk's size."""
    if values.dim() == 0 or values.shape[0] != samples:
        return values.mean().expand(samples)
    if weight is None:
        return values.reshape(samples, -1).mean(dim=1)
    weight = weight.expand_as(values)
    total = (values * weight).reshape(samples, -1).sum(dim=1)
    return total / weight.reshape(samples, -1).sum(dim=1).clamp_min(1.0)


def tensor_loss(
    student: torch.Tensor, teacher: torch.Tensor, keep: np.ndarray | None, scale: float
) -> torch.Tensor:
    """Relative squared error per sample (``scale``: the teacher's mean square)."""
    error = (student - teacher) ** 2
    return _per_sample(error, _positions(error, keep), len_of(keep, student)) / scale


def len_of(keep: np.ndarray | None, tensor: torch.Tensor) -> int:
    return int(keep.shape[0]) if keep is not None else int(tensor.shape[0]) if tensor.dim() else 1


def _log_probabilities(tensor: torch.Tensor, probabilities: bool) -> torch.Tensor:
    if probabilities:
        return torch.log(tensor.clamp_min(1e-12))
    return torch.log_softmax(tensor, dim=-1)


def output_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    task: str | None,
    keep: np.ndarray | None,
    scale: float,
    labels: np.ndarray | None = None,
    label_weight: float = 0.0,
    probabilities: bool = False,
) -> torch.Tensor:
    """The task's distillation loss per sample (see the module docstring)."""
    samples = len_of(keep, student)
    if task == "classification" and student.dim() >= 1 and student.shape[-1] >= 2:
        target = _log_probabilities(teacher, probabilities)
        predicted = _log_probabilities(student, probabilities)
        divergence = (target.exp() * (target - predicted)).sum(dim=-1)
        loss = _per_sample(divergence, _positions(divergence, keep), samples)
        if labels is not None and label_weight > 0 and predicted.dim() == 2:
            if tuple(labels.shape) == (predicted.shape[0],):
                picked = predicted.gather(1, torch.from_numpy(labels.astype(np.int64))[:, None])
                loss = loss - label_weight * picked[:, 0]
        return loss
    loss = tensor_loss(student, teacher, keep, scale)
    if task == "embedding" and student.dim() >= 2:
        cosine = torch.nn.functional.cosine_similarity(student, teacher, dim=-1, eps=1e-8)
        loss = loss + _per_sample(1.0 - cosine, _positions(cosine, keep), samples)
    return loss


class Objective:
    """Per-sample losses of a chunk -> the scalar minimised (see the module docstring)."""

    def __init__(self, groups: dict[str, np.ndarray] | None = None, beta: float = 0.0) -> None:
        self.beta = beta
        self.columns: list[np.ndarray] = []
        self.running: list[np.ndarray] = []  # per attribute: each group's running mean loss
        self.weights: np.ndarray | None = None
        if groups:
            weights = []
            for column in groups.values():
                _, codes, counts = np.unique(column, return_inverse=True, return_counts=True)
                self.columns.append(codes)
                self.running.append(np.full(len(counts), np.nan))
                weights.append(len(column) / (len(counts) * counts[codes]))
            self.weights = np.mean(weights, axis=0)

    def __call__(self, losses: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        if self.weights is None:
            return losses.mean()
        weight = torch.from_numpy(self.weights[indices].astype(np.float32))
        value = (losses * weight).sum() / weight.sum()
        worst = [
            losses[torch.from_numpy(codes[indices] == code)].mean()
            for codes in self.columns
            for code in np.unique(codes[indices])
        ]
        return value + self.beta * torch.stack(worst).max()

    def reset(self) -> None:
        """Forget the running group losses (a new set of weights starts training)."""
        for running in self.running:
            running.fill(np.nan)

    def step(self, losses: torch.Tensor, indices: np.ndarray) -> torch.Tensor:
        """The training-step objective (see the module docstring)."""
        if self.weights is None:
            return losses.mean()
        weight = torch.from_numpy(self.weights[indices].astype(np.float32))
        value = (losses * weight).sum() / weight.sum()
        chosen, highest = None, -np.inf
        for codes, running in zip(self.columns, self.running, strict=True):
            for code in np.unique(codes[indices]):
                members = losses[torch.from_numpy(codes[indices] == code)]
                mean = float(members.detach().mean())
                previous = running[code]
                running[code] = (
                    mean if np.isnan(previous) else (SMOOTHING * previous + (1 - SMOOTHING) * mean)
                )
                if running[code] > highest:
                    chosen, highest = members, running[code]
        return value + self.beta * chosen.mean()
