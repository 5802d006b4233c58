"""Split evaluation data into a selection half and a confirmation half, honestly.

The search sees only the selection half; the chosen model is re-verified on the confirmation
half, and that is what the report and the gates state. The split is seeded and stratified by
label and every group attribute together: within each stratum (one combination of label and
group values) the samples are shuffled and dealt alternately, so both halves have the same
mix of labels and groups (strata of odd size alternate which half gets the extra sample).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from onnxprune.data import Dataset
from onnxprune.errors import InputError

__all__ = ["split_indices", "stratified_split", "subset"]


def _strata(dataset: Dataset) -> np.ndarray:
    """One integer per sample naming its stratum (label x every group attribute)."""
    columns = [] if dataset.labels is None else [dataset.labels.reshape(dataset.samples, -1)]
    columns += [np.asarray(dataset.groups[k]).reshape(-1, 1) for k in sorted(dataset.groups)]
    if not columns:
        return np.zeros(dataset.samples, dtype=np.int64)
    keys = np.array(
        ["\x1f".join(map(str, row)) for row in zip(*[c.tolist() for c in columns], strict=True)]
    )
    _, codes = np.unique(keys, return_inverse=True)
    return codes.reshape(-1)


def split_indices(dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted sample indices of the selection and confirmation halves."""
    if dataset.samples < 4:
        raise InputError(
            f"--auto splits the evaluation data into a selection and a confirmation half: "
            f"{dataset.samples} samples are too few"
        )
    rng = np.random.default_rng(seed)
    strata = _strata(dataset)
    selection, confirmation = [], []
    extra_to_selection = True
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        first, second = members[0::2], members[1::2]
        if len(members) % 2 and not extra_to_selection:
            first, second = members[1::2], members[0::2]
        if len(members) % 2:
            extra_to_selection = not extra_to_selection
        selection.append(first)
        confirmation.append(second)
    return np.sort(np.concatenate(selection)), np.sort(np.concatenate(confirmation))


def subset(dataset: Dataset, indices: np.ndarray, source: str) -> Dataset:
    """The samples at ``indices`` (on each input's sample axis), labels and groups alike."""
    if any(dataset.axis(name) is None for name in dataset.inputs):
        raise InputError("--auto cannot split data with a 0-d input (one value for every sample)")
    inputs = {
        name: np.take(array, indices, axis=dataset.axis(name))
        for name, array in dataset.inputs.items()
    }
    labels = None if dataset.labels is None else dataset.labels[indices]
    groups = {name: column[indices] for name, column in dataset.groups.items()}
    return replace(dataset, inputs=inputs, labels=labels, groups=groups, source=source)


def stratified_split(dataset: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """The selection and confirmation halves of ``dataset`` (seeded, stratified)."""
    selection, confirmation = split_indices(dataset, seed)
    source = dataset.source or "data"
    return (
        subset(dataset, selection, f"{source} (selection half, seed {seed})"),
        subset(dataset, confirmation, f"{source} (confirmation half, seed {seed})"),
    )
