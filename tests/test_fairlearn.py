"""Dev-only: onnxprune's group metrics agree with fairlearn's on the Adult fixture data.

fairlearn (the dev extra) computes the same per-group accuracy, selection rate, TPR and FPR
(``MetricFrame``), the demographic-parity difference and the equalized-odds difference, on every
group and on the groups of at least ``min_group_size`` samples, for single attributes and for
the race x sex intersection.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.fairness import fairness_metrics
from onnxprune.groups import GroupOptions
from onnxprune.runtime import create_session
from tests.conftest import FIXTURE_MODELS

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
pd = pytest.importorskip("pandas")

MODEL, DATA = FIXTURE_MODELS["adult_mlp"]
RATES = {
    "accuracy": lambda t, p: float(np.mean(t == p)),
    "selection_rate": fairlearn_metrics.selection_rate,
    "tpr": fairlearn_metrics.true_positive_rate,
    "fpr": fairlearn_metrics.false_positive_rate,
}


@pytest.fixture(scope="module")
def adult() -> dict:
    data = dict(np.load(DATA))
    logits = create_session(MODEL, 1).run(None, {"input": data["input"]})[0]
    noise = np.random.default_rng(0).normal(0, 1.5, logits.shape).astype(np.float32)
    return {"data": data, "before": logits, "after": logits + noise}


def _frame(data: dict, names: tuple[str, ...]):
    return pd.DataFrame({n: data[f"group.{n}"] for n in names})


def _eligible(data: dict, names: tuple[str, ...], minimum: int) -> np.ndarray:
    keys = pd.Series(list(zip(*(data[f"group.{n}"] for n in names), strict=True)))
    return keys.map(keys.value_counts()).to_numpy() >= minimum


@pytest.mark.parametrize("minimum", [1, 30])
@pytest.mark.parametrize("names", [("race",), ("sex",), ("race", "sex")])
def test_matches_fairlearn(adult: dict, names: tuple[str, ...], minimum: int) -> None:
    data, labels = adult["data"], adult["data"]["label"]
    groups = {n: data[f"group.{n}"] for n in ("race", "sex")}
    # fairlearn leaves no rate out: compare with every TPR and FPR counted
    options = GroupOptions(
        min_group_size=minimum, cross=("race,sex",), bootstrap=0, min_group_positives=1
    )
    summary = fairness_metrics(groups, labels, adult["before"], adult["after"], options)[
        "&".join(names)
    ]
    ours = {g["group"]: g for g in summary["groups"]}
    keep = _eligible(data, names, minimum)
    assert sum(not g["small"] for g in ours.values()) == len(
        set(map(tuple, _frame(data, names)[keep].to_numpy()))
    )
    for when in ("before", "after"):
        predicted = adult[when].argmax(axis=1)
        frame = fairlearn_metrics.MetricFrame(
            metrics=RATES, y_true=labels, y_pred=predicted, sensitive_features=_frame(data, names)
        )
        for key, row in frame.by_group.iterrows():
            group = ours[" & ".join(key) if isinstance(key, tuple) else key]
            for metric in RATES:
                assert group[f"{metric}_{when}"] == pytest.approx(row[metric], abs=1e-12)
        features = _frame(data, names)[keep]
        for field, function in (
            ("demographic_parity", fairlearn_metrics.demographic_parity_difference),
            ("equalized_odds", fairlearn_metrics.equalized_odds_difference),
        ):
            theirs = function(labels[keep], predicted[keep], sensitive_features=features)
            assert summary[f"{field}_difference_{when}"] == pytest.approx(theirs, abs=1e-12)
