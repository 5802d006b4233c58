"""Outputs compared batch by batch give the numbers computed on the whole outputs, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.comparison import OutputComparison
from onnxprune.errors import InputError
from onnxprune.metrics import agreement_metrics, predictions
from onnxprune.tasks import resolve_task


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((13, 5)).astype(np.float32)
    probs = _softmax(logits)
    mixed = probs.copy()
    mixed[9] = logits[9]  # a later batch whose rows are not probabilities
    hidden = rng.standard_normal((13, 4, 6)).astype(np.float32)
    score = rng.random((13, 1)).astype(np.float32)
    broken = logits.copy()
    broken[11, 2] = np.nan
    noise = lambda a: (a + 0.1 * rng.standard_normal(a.shape)).astype(a.dtype)  # noqa: E731
    return {
        "logits": (logits, noise(logits)),
        "probabilities": (probs, noise(probs)),
        "probabilities_then_logits": (mixed, noise(mixed)),
        "sequence_hidden": (hidden, noise(hidden)),
        "one_score": (score, noise(score)),
        "nan_in_a_late_batch": (broken, noise(broken)),
        "class_ids": (np.arange(13) % 3, (np.arange(13) + (np.arange(13) > 8)) % 3),
    }


@pytest.mark.parametrize("case", list(_cases()))
@pytest.mark.parametrize("batch", [1, 4, 13])
def test_batches_give_the_whole_outputs_numbers(case: str, batch: int) -> None:
    base, cand = _cases()[case]
    comparison = OutputComparison(["out", "other"], "out", keep_scored=True)
    for start in range(0, len(base), batch):
        comparison.add("out", base[start : start + batch], cand[start : start + batch])
        comparison.add("other", cand[start : start + batch], base[start : start + batch])
    comparison.check()
    task = resolve_task(None, "out", base, False)
    assert comparison.task(None, False) == task
    for classification in (True, False):
        expected = agreement_metrics(base, cand, classification=classification)
        np.testing.assert_equal(comparison.agreement(classification), expected)  # exact
    base_pred, cand_pred = comparison.predictions()
    assert np.array_equal(base_pred, predictions(base))
    assert np.array_equal(cand_pred, predictions(cand))
    whole = float(np.max(np.abs(base.astype(np.float64) - cand)))
    np.testing.assert_equal(comparison.max_abs_diff("out"), whole)
    np.testing.assert_equal(comparison.max_abs_diff("other"), whole)
    finite = bool(np.isfinite(base).all()) if base.dtype.kind == "f" else True
    assert comparison.finite()["baseline"] is finite
    kept = comparison.scored_values()
    assert np.array_equal(kept[0], base, equal_nan=True) and kept[1].shape == cand.shape


def test_a_later_batch_decides_against_probabilities() -> None:
    base, cand = _cases()["probabilities_then_logits"]
    comparison = OutputComparison(["out"], "out")
    for start in range(0, 13, 4):
        comparison.add("out", base[start : start + 4], cand[start : start + 4])
    first = resolve_task(None, "out", base[:4], False)
    assert first.evidence == "the output rows are probabilities"
    assert comparison.task(None, False).name is None  # not every row is a probability row


def test_batches_that_cannot_be_lined_up_are_refused() -> None:
    comparison = OutputComparison(["out"], "out")
    comparison.add("out", np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(InputError, match="changes shape between batches"):
        comparison.add("out", np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="no samples reached output 'out'"):
        OutputComparison(["out"], "out").check()
    with pytest.raises(ValueError, match="not kept"):
        comparison.scored_values()
