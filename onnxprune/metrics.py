"""Quality metrics that compare a candidate model's outputs with the baseline's and with labels.

Predictions: an integer output is taken as class ids; a float output with a last axis of 2 or
more is reduced by argmax over that axis; a float output with a last axis of 1 (or none) is a
binary score thresholded at 0.5. Group metrics use binary labels (1 = positive) for TPR/FPR.
"""

from __future__ import annotations

import numpy as np

__all__ = ["agreement_metrics", "group_metrics", "predictions"]


def predictions(output: np.ndarray) -> np.ndarray:
    """Class predictions, one per sample (and per position for sequence outputs)."""
    if output.dtype.kind in "iub":
        return output.astype(np.int64)
    if output.ndim >= 2 and output.shape[-1] >= 2:
        return output.argmax(axis=-1)
    return (output.reshape(len(output), -1)[:, 0] > 0.5).astype(np.int64)


def _per_sample(output: np.ndarray) -> np.ndarray:
    return output.reshape(len(output), -1).astype(np.float64)


def agreement_metrics(
    baseline: np.ndarray, candidate: np.ndarray, classification: bool = True
) -> dict:
    """Cosine similarity per sample (mean and min), max abs difference, and for classifiers
    top-1 agreement (None otherwise: argmax agreement means nothing on an embedding).

    An output of one value per sample (a score, a probability) has no per-sample direction: its
    cosine is taken over the samples, as one vector (``cosine_over: "samples"``)."""
    base, cand = _per_sample(baseline), _per_sample(candidate)
    over = "sample"
    if base.shape[1] == 1:
        base, cand, over = base.reshape(1, -1), cand.reshape(1, -1), "samples"
    base_norm, cand_norm = np.linalg.norm(base, axis=1), np.linalg.norm(cand, axis=1)
    norms = base_norm * cand_norm
    dots = np.sum(base * cand, axis=1)
    # Both all-zero: identical (1); one all-zero: 0; NaN/Inf stays NaN, never a perfect score.
    same_zero = ((base_norm == 0) & (cand_norm == 0)).astype(np.float64)
    cosine = np.divide(dots, norms, out=same_zero, where=(norms > 0) | np.isnan(norms))
    return {
        "top1_agreement": (
            float(np.mean(predictions(baseline) == predictions(candidate)))
            if classification
            else None
        ),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "max_abs_diff": float(np.max(np.abs(base - cand))) if base.size else 0.0,
        "cosine_over": over,
    }


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted.reshape(labels.shape) == labels))


def _rates(predicted: np.ndarray, labels: np.ndarray) -> dict:
    positives, negatives = labels == 1, labels == 0
    return {
        "tpr": float(np.mean(predicted[positives] == 1)) if positives.any() else None,
        "fpr": float(np.mean(predicted[negatives] == 1)) if negatives.any() else None,
    }


def group_metrics(
    column: np.ndarray,
    labels: np.ndarray | None,
    base_pred: np.ndarray,
    cand_pred: np.ndarray,
) -> dict:
    """Per group: count, agreement, and with labels accuracy before/after, drop, TPR/FPR.

    Per attribute: the largest accuracy gap between groups before and after, and the worst
    group's accuracy drop.
    """
    binary = labels is not None and set(np.unique(labels).tolist()) <= {0, 1}
    groups = []
    for value in sorted(np.unique(column).tolist(), key=str):
        rows = column == value
        entry = {
            "group": str(value),
            "samples": int(rows.sum()),
            "top1_agreement": float(np.mean(base_pred[rows] == cand_pred[rows])),
        }
        if labels is not None:
            before, after = (
                accuracy(base_pred[rows], labels[rows]),
                accuracy(cand_pred[rows], labels[rows]),
            )
            entry.update(accuracy_before=before, accuracy_after=after, accuracy_drop=before - after)
        if binary:
            rates_before, rates_after = (
                _rates(base_pred[rows], labels[rows]),
                _rates(cand_pred[rows], labels[rows]),
            )
            entry.update({f"{k}_before": v for k, v in rates_before.items()})
            entry.update({f"{k}_after": v for k, v in rates_after.items()})
        groups.append(entry)
    summary: dict = {"groups": groups}
    if labels is not None:
        before = [g["accuracy_before"] for g in groups]
        after = [g["accuracy_after"] for g in groups]
        worst = max(groups, key=lambda g: g["accuracy_drop"])
        summary.update(
            accuracy_gap_before=max(before) - min(before),
            accuracy_gap_after=max(after) - min(after),
            worst_group=worst["group"],
            worst_group_drop=worst["accuracy_drop"],
        )
    return summary
