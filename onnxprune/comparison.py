"""Two models' outputs compared batch by batch, without holding either model's outputs.

``OutputComparison.add`` takes one batch of one output from both models and keeps only what
the verification's numbers need: per output, the largest absolute difference, whether the
values are finite and the batch shapes (as ``runtime.check_parts`` checks them); of the scored
output, per sample, the predictions, norms and dot products (``metrics.agreement_parts``), and
the evidence for its task; ``quality`` turns them into the verification's quality section.
The raw scored outputs are kept only when per-group metrics need
them (their probabilities and calibration error). Every number equals the one computed on the
concatenated outputs (the metrics reduce per sample, then over the samples kept in order).
"""

from __future__ import annotations

import numpy as np

from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.fairness import fairness_metrics
from onnxprune.groups import GroupOptions, crossed_attributes
from onnxprune.metrics import (
    ECE_METHOD,
    accuracy,
    agreement_parts,
    agreement_summary,
    check_labels,
    output_classes,
)
from onnxprune.runtime import check_parts
from onnxprune.tasks import Task, probability_rows, resolve_task

__all__ = ["OutputComparison", "first_samples"]


def first_samples(dataset: Dataset, count: int) -> Dataset:
    """The first ``count`` samples of ``dataset`` (inputs, labels and groups), its source
    saying so."""
    return Dataset(
        dataset.slice(0, count),
        labels=None if dataset.labels is None else dataset.labels[:count],
        groups={name: column[:count] for name, column in dataset.groups.items()},
        source=f"{dataset.source} (the first {count} of {dataset.samples} samples: --samples)",
        sample_axes=dataset.sample_axes,
    )


def _group_settings(groups: GroupOptions) -> dict:
    return {
        "min_group_size": groups.min_group_size,
        "cross": list(groups.cross),
        "bootstrap_resamples": groups.bootstrap,
        "bootstrap_seed": groups.seed,
        "interval": "paired bootstrap, 95% percentile interval of each group's accuracy drop",
        "calibration_error": ECE_METHOD,
    }


def _shape_stub(values: np.ndarray) -> np.ndarray:
    """An array of ``values``'s shape and dtype that holds no memory (for ``check_parts``)."""
    return np.broadcast_to(np.zeros((), values.dtype), values.shape)


class OutputComparison:
    """What the verification needs of two models' outputs, gathered batch by batch.

    Args:
        names: the tensor outputs compared.
        scored: the output the quality metrics score.
        keep_scored: keep the scored output's values of both models (per-group metrics).
    """

    def __init__(self, names: list[str], scored: str, keep_scored: bool = False) -> None:
        self.names, self.scored, self.keep_scored = list(names), scored, keep_scored
        self._stubs: dict[str, list[np.ndarray]] = {name: [] for name in names}
        self._diffs: dict[str, list[float]] = {name: [] for name in names}
        self._parts: list[dict] = []
        self._kept: tuple[list, list] = ([], [])
        self._finite = [True, True]
        self._example: np.ndarray | None = None  # decides the task (see ``task``)
        self._probabilities = True

    def add(self, name: str, baseline: np.ndarray, candidate: np.ndarray) -> None:
        """One batch of output ``name`` from both models (batches in sample order)."""
        stubs = self._stubs[name]
        stubs.append(_shape_stub(baseline))
        if baseline.ndim == 0 or stubs[-1].shape[1:] != stubs[0].shape[1:]:
            check_parts(name, stubs)
        if name != self.scored:
            if baseline.size:
                self._diffs[name].append(np.max(np.abs(baseline.astype(np.float64) - candidate)))
            return
        parts = agreement_parts(baseline, candidate)  # its largest difference serves both
        self._parts.append(parts)
        if parts["max_abs_diff"] is not None:
            self._diffs[name].append(parts["max_abs_diff"])
        for side, values in enumerate((baseline, candidate)):
            self._finite[side] &= bool(values.dtype.kind not in "fc" or np.isfinite(values).all())
            if self.keep_scored:
                self._kept[side].append(values)
        rows = probability_rows(baseline)
        if self._example is None or (self._probabilities and not rows):
            self._example = baseline  # the first batch, or the first whose rows are not
        self._probabilities &= rows

    def check(self) -> None:
        """Refuse outputs no sample reached (``runtime.check_parts``)."""
        for name in self.names:
            check_parts(name, self._stubs[name])

    def task(self, declared: str | None, has_labels: bool) -> Task:
        """The scored output's task, as ``tasks.resolve_task`` gives it on all its rows: the
        rows are probabilities only if every batch's are, so one batch decides."""
        return resolve_task(declared, self.scored, self._example, has_labels)

    @property
    def example(self) -> np.ndarray:
        """One batch of the baseline's scored output (its dtype and shape past the samples)."""
        return self._example

    def agreement(self, classification: bool) -> dict:
        """``metrics.agreement_metrics`` of the scored output over all samples."""
        return agreement_summary(self._parts, classification)

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """Both models' predictions of the scored output, every sample."""
        return tuple(
            np.concatenate([p[key] for p in self._parts]) for key in ("base_pred", "cand_pred")
        )

    def scored_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Both models' scored output, every sample (only with ``keep_scored``)."""
        if not self.keep_scored:
            raise ValueError("the scored outputs were not kept (keep_scored=False)")
        return tuple(np.concatenate(kept, axis=0) for kept in self._kept)

    def finite(self) -> dict[str, bool]:
        """Whether each model's scored output is finite on every sample."""
        return {"baseline": self._finite[0], "candidate": self._finite[1]}

    def max_abs_diff(self, name: str) -> float:
        """The largest absolute difference of output ``name`` (0 for an empty output)."""
        diffs = self._diffs[name]
        return float(np.max(diffs)) if diffs else 0.0

    def quality(self, dataset: Dataset, task: Task, groups: GroupOptions) -> dict:
        """The verification's quality section: agreement, and for a classifier accuracy
        against the labels and per-group metrics (``fairness.fairness_metrics``)."""
        quality = self.agreement(task.classification)
        if not task.classification:
            quality["groups"] = {}
            return quality
        base_pred, cand_pred = self.predictions()
        labels = dataset.labels
        if labels is not None:
            if labels.shape != base_pred.shape:
                raise InputError(
                    f"'label' has shape {labels.shape}, but the scored output gives "
                    f"predictions of shape {base_pred.shape}"
                )
            check_labels(labels, output_classes(self.example), self.scored)
            before, after = accuracy(base_pred, labels), accuracy(cand_pred, labels)
            quality.update(
                accuracy_before=before, accuracy_after=after, accuracy_drop=before - after
            )
        if dataset.groups:
            quality["group_settings"] = _group_settings(groups)
            base_out, cand_out = self.scored_values()
            quality["groups"] = fairness_metrics(dataset.groups, labels, base_out, cand_out, groups)
        else:  # what fairness_metrics checks and returns without groups
            groups.validate()
            crossed_attributes(groups.cross, [])
            quality["groups"] = {}
        return quality
