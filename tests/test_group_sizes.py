"""The tabular fixtures' group sizes per search half: what a 2-point group gate can measure.

COMPAS's gated groups have 58-73 rows per half (one flipped row is 1.4-1.7 pt); the credit
fixture was built so that every group has several hundred rows per half (``fixtures/
build_credit.py``). These are the numbers the README's #10 table rests on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxprune.data import input_specs, load_dataset
from onnxprune.model_io import load_model
from onnxprune.search.split import split_indices

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _smallest_gated_group(name: str, seed: int, minimum: int = 30) -> int:
    """The fewest rows any group of at least ``minimum`` rows has in either half."""
    model = FIXTURES / f"{name}.onnx"
    dataset = load_dataset(FIXTURES / f"{name}-eval.npz", input_specs(load_model(model)))
    sizes = []
    for half in split_indices(dataset, seed):
        for column in dataset.groups.values():
            _, counts = np.unique(np.asarray(column)[half], return_counts=True)
            sizes += [int(c) for c in counts if c >= minimum]
    return min(sizes)


@pytest.mark.parametrize("seed", [0, 3])
def test_credit_groups_have_hundreds_of_rows_per_half(seed):
    assert _smallest_gated_group("credit_mlp", seed) >= 400


def test_compas_gated_groups_are_small():
    assert _smallest_gated_group("compas_mlp", 0) < 100


def test_credit_fixture_has_labels_and_both_attributes():
    data = np.load(FIXTURES / "credit_mlp-eval.npz")
    assert set(data["group.sex"]) == {"female", "male"}
    assert set(data["group.age"]) == {"under 30", "30-39", "40 and over"}
    assert data["input"].shape == (6000, 28)
    assert 0.15 < data["label"].mean() < 0.3  # default next month: about 22% of clients
