"""Quality metrics that compare a candidate model's outputs with the baseline's and with labels.

Predictions: an integer output is taken as class ids; a float output with a last axis of 2 or
more is reduced by argmax over that axis; a float output with a last axis of 1 (or none) is a
binary score thresholded at 0.5. Per-group metrics live in ``onnxprune.fairness``.

Calibration error (``calibration_error``): the top-label expected calibration error over
``ECE_BINS`` equal-width confidence bins, ``sum_b n_b / n * |accuracy_b - confidence_b|``,
where a sample's confidence is its largest class probability. Probabilities are the output's
rows when they already are probabilities (non-negative, summing to 1), else the softmax of the
rows (logits); a single score in [0, 1] is the positive class's probability. Integer outputs
and single scores outside [0, 1] have no probabilities, and no calibration error.
"""

from __future__ import annotations

import numpy as np

from onnxprune.errors import InputError

__all__ = [
    "ECE_BINS",
    "ECE_METHOD",
    "accuracy",
    "agreement_metrics",
    "agreement_parts",
    "agreement_summary",
    "calibration_error",
    "check_labels",
    "output_classes",
    "predictions",
    "probabilities",
]

ECE_BINS = 10
ECE_METHOD = (
    f"top-label expected calibration error, {ECE_BINS} equal-width confidence bins; "
    "probabilities are the output rows, their softmax (logits) or a single score in [0, 1]"
)


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
    """Cosine similarity per sample (mean, min and the mean's standard error), max abs
    difference, and for classifiers top-1 agreement (None otherwise: argmax agreement means
    nothing on an embedding).

    An output of one value per sample (a score, a probability) has no per-sample direction: its
    cosine is taken over the samples, as one vector (``cosine_over: "samples"``)."""
    return agreement_summary([agreement_parts(baseline, candidate)], classification)


def agreement_parts(baseline: np.ndarray, candidate: np.ndarray) -> dict:
    """What ``agreement_summary`` needs of one batch of both outputs, per sample: predictions,
    norms and dot products (the values themselves for one value per sample), and the batch's
    largest absolute difference (None when empty). Small next to the outputs."""
    base, cand = _per_sample(baseline), _per_sample(candidate)
    empty = np.zeros(len(base), np.int64)  # no values per sample: nothing to predict from
    parts = {
        "base_pred": predictions(baseline) if base.shape[1] else empty,
        "cand_pred": predictions(candidate) if base.shape[1] else empty,
        "max_abs_diff": np.max(np.abs(base - cand)) if base.size else None,
    }
    if base.shape[1] == 1:
        return {**parts, "base_values": base[:, 0], "cand_values": cand[:, 0]}
    base_norm, cand_norm = np.linalg.norm(base, axis=1), np.linalg.norm(cand, axis=1)
    return {
        **parts,
        "base_norm": base_norm,
        "cand_norm": cand_norm,
        "dots": np.sum(base * cand, axis=1),
    }


def agreement_summary(batches: list[dict], classification: bool = True) -> dict:
    """``agreement_metrics`` from the ``agreement_parts`` of consecutive batches (the same
    numbers as on the whole outputs)."""
    joined = {
        key: np.concatenate([part[key] for part in batches])
        for key in batches[0]
        if key != "max_abs_diff"
    }
    over = "sample"
    if "base_values" in joined:
        base, cand = joined["base_values"].reshape(1, -1), joined["cand_values"].reshape(1, -1)
        base_norm, cand_norm = np.linalg.norm(base, axis=1), np.linalg.norm(cand, axis=1)
        dots, over = np.sum(base * cand, axis=1), "samples"
    else:
        base_norm, cand_norm, dots = joined["base_norm"], joined["cand_norm"], joined["dots"]
    norms = base_norm * cand_norm
    # Both all-zero: identical (1); one all-zero: 0; NaN/Inf stays NaN, never a perfect score.
    same_zero = ((base_norm == 0) & (cand_norm == 0)).astype(np.float64)
    cosine = np.divide(dots, norms, out=same_zero, where=(norms > 0) | np.isnan(norms))
    diffs = [part["max_abs_diff"] for part in batches if part["max_abs_diff"] is not None]
    return {
        "top1_agreement": (
            float(np.mean(joined["base_pred"] == joined["cand_pred"])) if classification else None
        ),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        # standard error of cosine_mean over the samples (0 for one vector): search bounds use it
        "cosine_se": float(cosine.std() / np.sqrt(len(cosine))),
        "max_abs_diff": float(np.max(diffs)) if diffs else 0.0,
        "cosine_over": over,
    }


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predicted.reshape(labels.shape) == labels))


def output_classes(output: np.ndarray) -> int | None:
    """How many classes a classifier output scores: the last axis of a float output of 2 or
    more, 2 for a single score; None for class ids (integer outputs), whose count is unknown."""
    if output.dtype.kind in "iub":
        return None
    if output.ndim >= 2 and output.shape[-1] >= 2:
        return int(output.shape[-1])
    return 2


def check_labels(labels: np.ndarray | None, classes: int | None, output: str) -> None:
    """Refuse labels that are not class indices of the scored output.

    Raises:
        InputError: a label is negative, or not below the output's class count (labels coded
            {1, 2} for a 2-class output).
    """
    if labels is None or not labels.size:
        return
    values = np.unique(labels).astype(np.int64)
    limit = classes if classes is not None else np.iinfo(np.int64).max
    bad = values[(values < 0) | (values >= limit)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        scope = f"0..{classes - 1} of the {classes}-class" if classes else "non-negative for the"
        raise InputError(
            f"'label' holds {shown}, but labels must be class indices {scope} output "
            f"'{output}' (recode them, e.g. {{1, 2}} -> {{0, 1}})"
        )


def probabilities(output: np.ndarray) -> np.ndarray | None:
    """Class probabilities ``[..., classes]`` of a classifier output, or None (see the module
    docstring for how they are read)."""
    if output.dtype.kind not in "f":
        return None
    values = output.astype(np.float64)
    if values.ndim >= 2 and values.shape[-1] >= 2:
        if np.all(values >= 0) and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3):
            return values
        shifted = np.exp(values - values.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    score = values.reshape(len(values), -1)[:, :1]
    if not np.all((score >= 0) & (score <= 1)):
        return None
    return np.concatenate([1 - score, score], axis=1)


def calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Top-label expected calibration error of ``probs`` (``[..., classes]``) against
    ``labels`` (``[...]``); None when there are no samples or the probabilities are not finite."""
    rows = probs.reshape(-1, probs.shape[-1])
    truth = labels.reshape(-1)
    if not len(rows) or not np.isfinite(rows).all():
        return None
    confidence = rows.max(axis=1)
    correct = (rows.argmax(axis=1) == truth).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(which, correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / len(rows))
