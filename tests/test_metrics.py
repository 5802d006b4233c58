"""Metrics on small arrays whose answers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.fairness import group_metrics
from onnxprune.metrics import agreement_metrics, predictions


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (np.array([[0.1, 0.9], [2.0, -1.0]], np.float32), [1, 0]),
        (np.array([[0.7], [0.2]], np.float32), [1, 0]),
        (np.array([3, 1], np.int64), [3, 1]),
    ],
    ids=["logits", "binary_score", "class_ids"],
)
def test_predictions(output: np.ndarray, expected: list[int]) -> None:
    assert predictions(output).tolist() == expected


def test_agreement_metrics() -> None:
    base = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    cand = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 2.0]], np.float32)
    metrics = agreement_metrics(base, cand)
    # Predictions: base [0, 1, 0]; cand [0, 0, 0]. Cosines: 1, 0, 1.
    assert metrics["top1_agreement"] == pytest.approx(2 / 3)
    assert metrics["cosine_mean"] == pytest.approx(2 / 3)
    assert metrics["cosine_min"] == pytest.approx(0.0)
    assert metrics["max_abs_diff"] == pytest.approx(1.0)


def test_group_metrics_by_hand() -> None:
    column = np.array(["a", "a", "a", "a", "b", "b"])
    labels = np.array([1, 1, 0, 0, 1, 0])
    before = np.array([1, 0, 0, 0, 1, 0])  # a: 3/4 right, b: 2/2 right
    after = np.array([1, 1, 1, 0, 0, 0])  # a: 3/4 right, b: 1/2 right
    summary = group_metrics(column, labels, before, after, min_group_size=1)
    a, b = summary["groups"]
    assert (a["group"], a["samples"], b["samples"]) == ("a", 4, 2)
    assert a["accuracy_before"] == 0.75 and a["accuracy_after"] == 0.75
    assert a["tpr_before"] == 0.5 and a["tpr_after"] == 1.0
    assert a["fpr_before"] == 0.0 and a["fpr_after"] == 0.5
    assert a["top1_agreement"] == 0.5
    assert b["accuracy_drop"] == 0.5
    assert summary["accuracy_gap_before"] == 0.25
    assert summary["accuracy_gap_after"] == 0.25
    assert (summary["worst_group"], summary["worst_group_drop"]) == ("b", 0.5)


def test_group_metrics_without_labels_give_agreement_only() -> None:
    summary = group_metrics(np.array([1, 2, 2]), None, np.array([0, 1, 1]), np.array([0, 1, 0]))
    assert [g["top1_agreement"] for g in summary["groups"]] == [1.0, 0.5]
    assert "accuracy_gap_before" not in summary


def test_cosine_of_zero_and_non_finite_rows() -> None:
    import numpy as np

    from onnxprune.metrics import agreement_metrics

    base = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    cand = np.array([[0.0, 0.0], [0.0, 0.0], [np.nan, 2.0]])
    metrics = agreement_metrics(base[:2], cand[:2], classification=False)
    assert metrics["cosine_min"] == 0.0 and metrics["cosine_mean"] == 0.5
    assert np.isnan(agreement_metrics(base, cand, classification=False)["cosine_mean"])


def test_one_value_per_sample_is_compared_over_the_samples() -> None:
    import numpy as np

    from onnxprune.metrics import agreement_metrics

    base = np.array([[0.1], [0.9], [0.5]])
    metrics = agreement_metrics(base, base * np.array([[3.0], [1.0], [1.0]]), False)
    assert metrics["cosine_over"] == "samples"
    assert metrics["cosine_mean"] < 0.99  # per sample, every scalar pair would score 1.0
