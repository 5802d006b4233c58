"""compress --auto's noise-aware selection gates: drop + z x paired standard error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_search import ADULT, ADULT_CALIBRATION, ADULT_DATA, QUICK, run_cli

from onnxprune.fairness import fairness_metrics
from onnxprune.groups import GroupOptions
from onnxprune.metrics import agreement_metrics
from onnxprune.search import AutoOptions
from onnxprune.search.bisect import Outcome
from onnxprune.search.bound import bounded, paired_se, prediction_z
from onnxprune.search.choose import choose_fairest
from onnxprune.verify import Gates, evaluate_gates


def _verification(labels, before, after, race) -> dict:
    """A verification section with the fields the gates read, from predicted class ids."""
    groups = fairness_metrics({"race": race}, labels, before, after, GroupOptions(bootstrap=0), 2)
    return {
        "data": {"samples": len(labels)},
        "quality": {
            "accuracy_drop": float(np.mean(before == labels) - np.mean(after == labels)),
            "top1_agreement": float(np.mean(before == after)),
            "cosine_mean": 1.0,
            "groups": groups,
        },
    }


def _flips(small_flips: int, big_flips: int = 0):
    """1000 rows: group 'big' (945 rows), 'small' (55 rows, gated at n >= 30); the baseline
    is always right, the candidate wrong on the first ``*_flips`` rows of each group."""
    labels = np.zeros(1000, dtype=np.int64)
    race = np.array(["big"] * 945 + ["small"] * 55)
    before = labels.copy()
    after = labels.copy()
    after[:big_flips] = 1
    after[945 : 945 + small_flips] = 1
    return _verification(labels, before, after, race)


def test_paired_se_matches_the_per_sample_differences():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    before = np.where(rng.random(200) < 0.9, labels, 1 - labels)
    after = np.where(rng.random(200) < 0.85, before, 1 - before)
    diff = (before == labels).astype(float) - (after == labels)
    expected = np.std(diff) / np.sqrt(len(diff))
    drop, agreement = float(diff.mean()), float(np.mean(before == after))
    assert paired_se(drop, agreement, 200) == pytest.approx(expected)
    assert paired_se(0.0, 1.0, 55) == 0.0


def test_a_candidate_passing_the_point_gate_but_not_the_bound_is_rejected():
    gates = Gates(max_group_drop=0.02)
    one_flip = _flips(1)  # 1/55 = 1.8 pt in the small group: passes 2 pt on the point value
    assert all(g["passed"] for g in evaluate_gates(gates, one_flip))
    judged = evaluate_gates(gates, bounded(one_flip, 1.0))
    assert not judged[0]["passed"]
    assert judged[0]["group"] == "small"
    assert judged[0]["value"] == pytest.approx(1 / 55 + np.sqrt((1 / 55 - 1 / 55**2) / 55))
    assert all(g["passed"] for g in evaluate_gates(gates, bounded(_flips(0), 1.0)))
    assert bounded(one_flip, 0.0) is one_flip


def test_the_mean_cosine_is_judged_by_its_lower_bound():
    """An embedding's mean cosine just above the budget, with a spread that makes it
    uncertain, fails the bound; the same mean with no spread passes."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(64, 8))
    cand = base + rng.normal(scale=0.35, size=base.shape) * rng.random((64, 1)) * 2
    quality = agreement_metrics(base, cand, classification=False)
    cosines = np.sum(base * cand, 1) / np.linalg.norm(base, axis=1) / np.linalg.norm(cand, axis=1)
    assert quality["cosine_se"] == pytest.approx(np.std(cosines) / np.sqrt(64))
    gates = Gates(min_cosine=quality["cosine_mean"] - quality["cosine_se"] / 2)
    verification = {"data": {"samples": 64}, "quality": quality}
    assert all(g["passed"] for g in evaluate_gates(gates, verification))
    judged = bounded(verification, 1.0)
    assert not evaluate_gates(gates, judged)[0]["passed"]
    assert judged["quality"]["cosine_mean_point"] == quality["cosine_mean"]
    steady = {**verification, "quality": {**quality, "cosine_se": 0.0}}
    assert all(g["passed"] for g in evaluate_gates(gates, bounded(steady, 1.0)))


def test_the_bound_covers_the_overall_drop_and_leaves_small_groups_out():
    verification = _flips(0, big_flips=8)  # 0.8 pt overall, 0.85 pt in 'big'
    point = evaluate_gates(Gates(max_accuracy_drop=0.01), verification)
    assert point[0]["passed"]
    judged = bounded(verification, 1.0)
    assert not evaluate_gates(Gates(max_accuracy_drop=0.01), judged)[0]["passed"]
    assert verification["quality"]["accuracy_drop"] == pytest.approx(0.008)  # not mutated
    labels = np.zeros(1000, dtype=np.int64)
    race = np.array(["big"] * 980 + ["tiny"] * 20)
    after = labels.copy()
    after[990:] = 1  # half of 'tiny' flipped: reported, but below --min-group-size
    summary = bounded(_verification(labels, labels, after, race), 1.0)["quality"]["groups"]
    assert summary["race"]["worst_group"] == "big"
    assert summary["race"]["worst_group_drop"] == 0.0


def test_the_fairest_candidate_is_chosen_by_its_bound():
    def outcome(key, objective, point, bound):
        record = {
            "selection": {"worst_group_drop": point, "accuracy_drop": 0.0},
            "bound": {"worst_group_drop": bound, "accuracy_drop": 0.0},
        }
        return Outcome(key, True, objective, {}, record)

    seen = [outcome("lucky", 100.0, 0.0, 0.019), outcome("steady", 101.0, 0.004, 0.008)]
    from types import SimpleNamespace

    evaluator = SimpleNamespace(best=seen[0], seen={o.key: o for o in seen})
    assert choose_fairest(evaluator, 0.02).key == "steady"


def test_search_z_is_reported_and_checked(tmp_path):
    base = ["compress", ADULT, "--auto", "--data", ADULT_DATA, "--calibration"]
    base += [ADULT_CALIBRATION, "--search-methods", "magnitude", "--max-accuracy-drop", "0.01"]
    bad = run_cli(*base, "--search-z", "-1", "-o", tmp_path / "bad.onnx", *QUICK)
    assert bad.returncode == 2
    assert "--search-z" in bad.output
    assert not (tmp_path / "bad.onnx").exists()


def test_the_size_objective_searches_int8_by_default():
    options = AutoOptions(log="x")
    assert options.searched_methods(True) == (
        "magnitude+int8",
        "magnitude",
        "wanda+int8",
        "wanda",
        "sparsegpt+int8",
        "sparsegpt",
    )
    macs = AutoOptions(log="x", objective="macs")
    assert macs.searched_methods(False) == ("magnitude",)
    floats = AutoOptions(log="x", precisions=("float",))
    assert floats.searched_methods(False) == ("magnitude",)
    gradual = AutoOptions(log="x", schedule="gradual")
    assert gradual.searched_methods(False) == ("magnitude",)


def test_gradual_schedule_refuses_int8(tmp_path):
    base = ["compress", ADULT, "--auto", "--data", ADULT_DATA, "--schedule", "gradual"]
    bad = run_cli(*base, "--search-precisions", "int8", "-o", tmp_path / "g.onnx", *QUICK)
    assert bad.returncode == 2
    assert "--schedule gradual prunes each step's model again; not magnitude+int8" in bad.output


def test_the_search_judges_candidates_by_the_bound(tmp_path):
    out = tmp_path / "w.onnx"
    args = ["compress", ADULT, "--auto", "--data", ADULT_DATA, "--calibration", ADULT_CALIBRATION]
    args += ["--search-methods", "magnitude", "--search-precisions", "float", "--max-evals", "4"]
    args += ["--max-accuracy-drop", "0.01", "--max-group-drop", "0.02", "--search-z", "2"]
    assert run_cli(*args, "-o", out, *QUICK).returncode in (0, 1)
    log = (tmp_path / "w.onnx.search.jsonl").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    records = [line.get("record", line) for line in lines]
    records = [r for r in records if "selection" in r]
    point_only = 0
    for record in records:
        point, bound = record["selection"], record["bound"]
        assert bound["accuracy_drop"] >= point["accuracy_drop"]
        assert bound["worst_group_drop"] >= point["worst_group_drop"]
        held = bound["accuracy_drop"] <= 0.01 + 1e-9 and bound["worst_group_drop"] <= 0.02 + 1e-9
        assert record["passed"] == held
        point_held = point["accuracy_drop"] <= 0.01 and point["worst_group_drop"] <= 0.02
        point_only += point_held and not held
    assert point_only >= 1  # a candidate that passes on the point values is rejected


def test_the_prediction_bound_adds_the_confirmation_halfs_noise():
    """Equal halves: the selection-minus-confirmation difference has sqrt(2) x the SE."""
    assert prediction_z(1.0, 2000, 2000) == pytest.approx(np.sqrt(2.0))
    assert prediction_z(2.0, 1000, 3000) == pytest.approx(2.0 * np.sqrt(4.0 / 3.0))
    assert prediction_z(0.0, 2000, 2000) == 0.0


def test_the_search_bounds_what_the_confirmation_half_will_measure(tmp_path):
    """Each candidate's bound is drop + z x sqrt(1 + n_sel / n_conf) x its paired SE; the
    report states the z applied."""
    out = tmp_path / "p.onnx"
    args = ["compress", ADULT, "--auto", "--data", ADULT_DATA, "--search-z", "1"]
    args += ["--search-methods", "magnitude", "--search-precisions", "float", "--max-evals", "3"]
    assert run_cli(*args, "-o", out, *QUICK).returncode in (0, 1)
    search = json.loads((tmp_path / "p.report.json").read_text())["search"]
    samples = search["split"]["selection"]
    assert search["z_applied"] == pytest.approx(prediction_z(1.0, samples, 4000 - samples))
    log = (tmp_path / "p.onnx.search.jsonl").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    records = [r for r in (line.get("record", line) for line in lines) if "selection" in r]
    assert records
    for record in records:
        point = record["selection"]
        se = paired_se(point["accuracy_drop"], point["top1_agreement"], samples)
        expected = point["accuracy_drop"] + search["z_applied"] * se
        assert record["bound"]["accuracy_drop"] == pytest.approx(expected)
