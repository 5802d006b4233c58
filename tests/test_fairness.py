"""Per-group metrics checked by hand: rates, gaps, small groups, names, intervals, gates."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.errors import InputError
from onnxprune.fairness import fairness_metrics, group_metrics, paired_bootstrap
from onnxprune.gates import Gates, evaluate_gates
from onnxprune.groups import GroupOptions, group_columns
from onnxprune.metrics import calibration_error, check_labels, probabilities

# Three groups: a (4 samples), b (4 samples), c (1 sample, small when the minimum is 2).
COLUMN = np.array(["a", "a", "a", "a", "b", "b", "b", "b", "c"])
LABELS = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1])
BEFORE = np.array([1, 0, 0, 0, 1, 1, 0, 0, 1])
AFTER = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0])


def _by_name(summary: dict) -> dict:
    return {g["group"]: g for g in summary["groups"]}


def test_binary_rates_and_differences_by_hand() -> None:
    summary = group_metrics(COLUMN, LABELS, BEFORE, AFTER, min_group_size=2, min_group_positives=1)
    a, b, c = (_by_name(summary)[n] for n in "abc")
    assert (a["positives"], a["negatives"], b["positives"], b["negatives"]) == (2, 2, 1, 3)
    # a: selection 1/4 -> 3/4, TPR 1/2 -> 2/2, FPR 0/2 -> 1/2, accuracy 3/4 -> 3/4
    assert (a["selection_rate_before"], a["selection_rate_after"]) == (0.25, 0.75)
    assert (a["tpr_before"], a["tpr_after"], a["fpr_before"], a["fpr_after"]) == (0.5, 1, 0, 0.5)
    # b: selection 2/4 -> 0, TPR 1 -> 0, FPR 1/3 -> 0, accuracy 3/4 -> 3/4
    assert (b["selection_rate_before"], b["selection_rate_after"]) == (0.5, 0.0)
    assert b["fpr_before"] == pytest.approx(1 / 3) and b["tpr_after"] == 0.0
    assert (b["accuracy_before"], b["accuracy_after"]) == (0.75, 0.75)
    assert c["small"] and not a["small"] and c["accuracy_drop"] == 1.0
    # Between a and b only (c is small): DP 0.25 -> 0.75; EO max(|TPR|, |FPR|) gaps:
    # before max(0.5, 1/3) = 0.5, after max(1.0, 0.5) = 1.0.
    assert summary["demographic_parity_difference_before"] == 0.25
    assert summary["demographic_parity_difference_after"] == 0.75
    assert summary["demographic_parity_increase"] == 0.5
    assert summary["equalized_odds_difference_before"] == 0.5
    assert summary["equalized_odds_difference_after"] == 1.0
    assert summary["accuracy_gap_before"] == 0.0 and summary["accuracy_gap_after"] == 0.0


def test_small_groups_are_shown_but_left_out() -> None:
    summary = group_metrics(COLUMN, LABELS, BEFORE, AFTER, min_group_size=2, min_group_positives=1)
    assert summary["small_groups"] == ["c"]
    assert "c (n=1)" in summary["note"] and "fewer than 2 samples" in summary["note"]
    assert summary["worst_group"] in ("a", "b") and summary["worst_group_drop"] == 0.0
    assert summary["lowest_group_agreement"] == 0.5  # a and b: 2 of 4; c (0 of 1) is small
    everyone = group_metrics(COLUMN, LABELS, BEFORE, AFTER, min_group_size=1, min_group_positives=1)
    assert (everyone["worst_group"], everyone["worst_group_drop"]) == ("c", 1.0)
    assert "note" not in everyone and everyone["small_groups"] == []
    nobody = group_metrics(COLUMN, LABELS, BEFORE, AFTER, min_group_size=100, min_group_positives=1)
    assert nobody["worst_group"] is None and nobody["accuracy_gap_before"] is None


def test_group_gate_ignores_small_groups_and_names_the_group() -> None:
    verification = {
        "quality": {
            "cosine_mean": 1.0,
            "groups": fairness_metrics(
                {"g": COLUMN}, LABELS, BEFORE, AFTER, GroupOptions(2, min_group_positives=1)
            ),
        }
    }
    (gate,) = evaluate_gates(Gates(max_group_drop=0.0), verification)
    assert gate["passed"] and gate["attribute"] == "g"  # c lost 100 pt but has 1 sample
    verification["quality"]["groups"] = fairness_metrics(
        {"g": COLUMN}, LABELS, BEFORE, AFTER, GroupOptions(1, min_group_positives=1)
    )
    (gate,) = evaluate_gates(Gates(max_group_drop=0.5), verification)
    assert not gate["passed"] and (gate["attribute"], gate["group"], gate["value"]) == ("g", "c", 1)


@pytest.mark.parametrize(
    ("limit", "passes"),
    [(0.5, True), (0.5 - 1e-12, True), (0.5 - 1e-6, False)],
    ids=["at_limit", "within_tolerance", "beyond"],
)
def test_group_gates_at_the_limit(limit: float, passes: bool) -> None:
    groups = fairness_metrics(
        {"g": COLUMN}, LABELS, BEFORE, AFTER, GroupOptions(2, min_group_positives=1)
    )
    verification = {"quality": {"cosine_mean": 1.0, "groups": groups}}
    gates = Gates(max_dp_increase=limit, max_eo_increase=limit, min_group_agreement=1 - limit)
    results = evaluate_gates(gates, verification)
    # DP increase 0.5, EO increase 0.5, lowest agreement 0.5: all exactly at a limit of 0.5.
    assert [r["passed"] for r in results] == [passes] * 3
    assert results[2]["group"] == "a" and all(r["attribute"] == "g" for r in results)


def test_group_names_decoded_sorted_and_crossed() -> None:
    columns = group_columns(
        {
            "age": np.array([10, 2, 10, 2, 33]),
            "tag": np.array([b"x", b"", "é".encode(), b"x", b""]),
        },
        cross=("age,tag",),
    )
    assert columns["age"].names == ["2", "10", "33"]
    assert columns["tag"].names == ["(empty)", "x", "é"]
    assert columns["age&tag"].names == ["2 & (empty)", "2 & x", "10 & x", "10 & é", "33 & (empty)"]
    assert columns["age&tag"].codes.tolist() == [2, 0, 3, 1, 4]
    every = group_columns({"a": np.zeros(2), "b": np.ones(2), "c": np.ones(2)}, ("all",))
    assert list(every) == ["a", "b", "c", "a&b", "a&c", "b&c"]
    with pytest.raises(InputError, match=r"no 'group\.race' array"):
        group_columns({"sex": np.array(["F"])}, ("race,sex",))


def test_multi_class_gives_per_class_recall() -> None:
    column = np.array(["u", "u", "u", "v", "v", "v"])
    labels = np.array([0, 1, 2, 2, 2, 1])
    before = np.array([0, 1, 2, 2, 2, 1])
    after = np.array([0, 2, 2, 2, 1, 1])
    summary = group_metrics(
        column, labels, before, after, min_group_size=1, classes=3, min_group_positives=1
    )
    u, v = summary["groups"]
    recall = {row["class"]: (row["tpr_before"], row["tpr_after"]) for row in v["per_class"]}
    assert recall == {0: (None, None), 1: (1.0, 1.0), 2: (1.0, 0.5)}
    assert u["per_class"][1]["fpr_after"] == 0.0 and u["per_class"][2]["fpr_after"] == 0.5
    assert "tpr_before" not in u  # no binary positive class
    # Largest one-vs-rest EO difference: none before (all right); after, class 1's TPR is
    # 0 in u (its 1 was called 2) and 1 in v.
    assert summary["equalized_odds_difference_before"] == 0.0
    assert summary["equalized_odds_difference_after"] == 1.0


def test_calibration_error_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.35, 0.65], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 1])
    # Bins by top confidence: 0.9 (right), 0.8 (right), 0.65 (wrong), 0.6 (wrong).
    # |1 - 0.9| + |1 - 0.8| + |0 - 0.65| + |0 - 0.6| over 4 samples.
    assert calibration_error(probs, labels) == pytest.approx((0.1 + 0.2 + 0.65 + 0.6) / 4)
    same_bin = np.array([[0.62, 0.38], [0.35, 0.65]])  # both in (0.6, 0.7]: one right
    assert calibration_error(same_bin, np.array([0, 0])) == pytest.approx(abs(0.5 - 0.635))
    logits = np.array([[2.0, 0.0]])
    assert probabilities(logits)[0, 0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert probabilities(np.array([[1.5]])) is None  # a score outside [0, 1]: not a probability
    assert probabilities(np.array([1, 0])) is None


def test_bootstrap_is_seeded_and_independent_of_other_groups() -> None:
    rng = np.random.default_rng(3)
    before, after = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    one = paired_bootstrap(before, after, 500, 7, "sex=F")
    assert one == paired_bootstrap(before, after, 500, 7, "sex=F")
    assert one != paired_bootstrap(before, after, 500, 8, "sex=F")
    low, high = paired_bootstrap(np.ones(100), np.zeros(100), 200, 0, "k")
    assert low == high == 1.0
    column = np.array(["a"] * 60 + ["b"] * 60)
    labels = np.tile([0, 1], 60)
    preds = np.where(np.arange(120) % 3 == 0, 1 - labels, labels)
    alone = group_metrics(column[:60], labels[:60], labels[:60], preds[:60], bootstrap=300)
    both = group_metrics(column, labels, labels, preds, bootstrap=300)
    assert alone["groups"][0]["accuracy_drop_ci95"] == both["groups"][0]["accuracy_drop_ci95"]
    assert both["groups"][0]["drop_ci_excludes_zero"] is True


def test_labels_must_be_class_indices() -> None:
    check_labels(np.array([0, 1, 1]), 2, "logits")
    with pytest.raises(InputError, match=r"'label' holds 2, .* 0\.\.1 of the 2-class output"):
        check_labels(np.array([1, 2, 2]), 2, "logits")
    with pytest.raises(InputError, match="non-negative"):
        check_labels(np.array([-1, 0]), None, "classes")
