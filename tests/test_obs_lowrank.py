"""Structured OBS in low-rank form removes the same units as full in x in updates."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.structured.importance import _obs_single


def _full_updates(state: list, units: int, remove: int, steps: int) -> np.ndarray:
    """The textbook greedy: every round updates all of W and H⁻¹ for the removed block."""
    alive = list(range(units))
    while remove > 0:
        take = max(1, min(remove, remove // steps))
        index = np.array(alive)
        costs = sum(
            (matrix[:, index] ** 2).sum(axis=0) / np.diag(inverse)[index]
            for matrix, inverse, _ in state
        )
        chosen = [alive[i] for i in np.argsort(costs, kind="stable")[:take]]
        alive = [unit for unit in alive if unit not in set(chosen)]
        remove -= take
        for matrix, inverse, _ in state:
            block = np.array(chosen)
            inner = np.linalg.inv(inverse[np.ix_(block, block)])
            matrix -= matrix[:, block] @ inner @ inverse[block, :]
            inverse -= inverse[:, block] @ inner @ inverse[block, :]
    return np.array(sorted(alive))


def _state(features: int, outs: tuple[int, ...], seed: int) -> list:
    rng = np.random.default_rng(seed)
    mixing = np.eye(features) + 0.3 * rng.standard_normal((features, features)) / features**0.5
    x = rng.standard_normal((2 * features, features)) @ mixing
    hessian = x.T @ x
    hessian[np.diag_indices(features)] += 1e-3 * np.mean(np.diag(hessian))
    inverse = np.linalg.inv(hessian)
    return [[rng.standard_normal((out, features)), inverse.copy(), 1] for out in outs]


@pytest.mark.parametrize(
    ("features", "outs", "remove", "steps"),
    [(96, (40,), 48, 32), (96, (40, 24), 70, 8), (64, (16,), 63, 64), (50, (30,), 5, 32)],
    ids=["half", "two-consumers", "all-but-one-single-steps", "few"],
)
def test_low_rank_obs_keeps_the_units_of_full_updates(features, outs, remove, steps) -> None:
    expected = _full_updates(_state(features, outs, 0), features, remove, steps)
    kept = _obs_single(_state(features, outs, 0), features, remove, steps)
    assert kept.dtype == np.int64 and len(kept) == features - remove
    assert np.array_equal(kept, expected)
