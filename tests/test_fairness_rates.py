"""--min-group-positives: a TPR (FPR) resting on too few positives (negatives) is shown but
left out of the equalized-odds difference and its gate, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.errors import InputError
from onnxprune.fairness import group_metrics
from onnxprune.gates import Gates, evaluate_gates
from onnxprune.group_report import group_lines
from onnxprune.groups import GroupOptions


def _data() -> tuple[np.ndarray, ...]:
    """A: 20 positives, 20 negatives; B: 1 positive, 33 negatives; C: 30 positives, 5
    negatives. Before: every prediction right. After: A misses 2 positives (TPR 18/20), B its
    only positive (TPR 0/1) and calls 1 negative positive (FPR 1/33), C calls 1 of its 5
    negatives positive (FPR 1/5)."""
    column = np.array(["A"] * 40 + ["B"] * 34 + ["C"] * 35)
    labels = np.array([1] * 20 + [0] * 20 + [1] + [0] * 33 + [1] * 30 + [0] * 5)
    after = labels.copy()
    after[[0, 1]] = 0  # A: two positives missed
    after[40] = 0  # B: its one positive missed
    after[41] = 1  # B: one negative called positive
    after[74 + 30] = 1  # C: one of five negatives called positive
    return column, labels, labels.copy(), after


def _summary(minimum: int) -> dict:
    column, labels, before, after = _data()
    return group_metrics(
        column, labels, before, after, min_group_size=30, min_group_positives=minimum
    )


def test_default_leaves_out_rates_on_fewer_than_ten():
    summary = _summary(10)
    groups = {g["group"]: g for g in summary["groups"]}
    assert (groups["B"]["positives"], groups["C"]["negatives"]) == (1, 5)
    assert groups["B"]["tpr_after"] == 0.0 and groups["C"]["fpr_after"] == pytest.approx(0.2)
    # TPR spread over A, C: 1.0 - 0.9; FPR spread over A, B: 1/33 - 0
    assert summary["equalized_odds_difference_before"] == 0.0
    assert summary["equalized_odds_difference_after"] == pytest.approx(0.1)
    assert summary["equalized_odds_increase"] == pytest.approx(0.1)
    assert summary["rates_left_out"] == ["B: TPR (1 positives)", "C: FPR (5 negatives)"]
    assert "fewer than 10 positives (TPR) or negatives (FPR)" in summary["rates_note"]
    assert summary["min_group_positives"] == 10
    # demographic parity does not depend on positives: every group counts
    selection = [g["selection_rate_after"] for g in summary["groups"]]
    assert summary["demographic_parity_difference_after"] == pytest.approx(
        max(selection) - min(selection)
    )


def test_one_counts_every_rate():
    summary = _summary(1)
    # TPR spread 1.0 - 0.0 (B's single positive decides it); FPR spread 0.2 - 0
    assert summary["equalized_odds_difference_after"] == pytest.approx(1.0)
    assert summary["rates_left_out"] == [] and "rates_note" not in summary


@pytest.mark.parametrize(("minimum", "passes"), [(10, True), (1, False)])
def test_the_equalized_odds_gate_follows(minimum, passes):
    verification = {"quality": {"cosine_mean": 1.0, "groups": {"g": _summary(minimum)}}}
    (gate,) = evaluate_gates(Gates(max_eo_increase=0.15), verification)
    assert gate["passed"] is passes


def test_the_report_says_which_rates_were_left_out():
    lines = group_lines("g", _summary(10))
    assert any("B: TPR (1 positives); C: FPR (5 negatives)" in line for line in lines)


def test_min_group_positives_must_be_positive():
    with pytest.raises(InputError, match="min_group_positives must be at least 1"):
        GroupOptions(min_group_positives=0).validate()
