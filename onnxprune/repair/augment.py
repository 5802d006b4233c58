"""Teacher-labelled augmentation: more training inputs from the calibration samples.

Repair learns from the teacher's outputs, not from labels, so any input near the calibration
data is a training example for free. With 128 sentences of about 20 tokens, a MiniLM block sees
some 2,000 token rows for 600k weights and overfits; ``augment`` copies of every training sample
(never of a held-out one) add variety:

* integer inputs that index a table (``Gather``: token ids) get ``rate`` of their real positions
  (never the first or the last real one, where tokenizers put ``[CLS]``/``[SEP]``) replaced by
  values drawn from the ids the calibration data itself uses, at their frequencies;
* float inputs get Gaussian noise of ``rate`` x each feature's standard deviation;
* other inputs (masks, token types, 0-d inputs) are copied unchanged.

A copy keeps its source's label and groups; held-out samples stay real, so early stopping and the
report's held-out losses are measured on data the student never saw in any form.
"""

from __future__ import annotations

import numpy as np

from onnxprune.data import Dataset

__all__ = ["augment"]


def _replace_tokens(
    ids: np.ndarray, keep: np.ndarray | None, rate: float, rng: np.random.Generator
) -> np.ndarray:
    real = (
        keep if keep is not None and keep.shape == ids.shape[:2] else np.ones(ids.shape[:2], bool)
    )
    pool = ids[real]
    positions = np.arange(real.shape[1])[None, :]
    first = real.argmax(axis=1)[:, None]
    last = real.shape[1] - 1 - real[:, ::-1].argmax(axis=1)[:, None]
    inner = real & (positions > first) & (positions < last)
    chosen = inner & (rng.random(real.shape) < rate)
    result = ids.copy()
    result[chosen] = rng.choice(pool, size=int(chosen.sum()))
    return result


def _noise(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    scale = values.std(axis=0, keepdims=True) * rate
    return (values + rng.standard_normal(values.shape) * scale).astype(values.dtype)


def _copy(data, name, rows, bounds, keep, rate, rng) -> np.ndarray:
    array = data.inputs[name][rows]
    if name in bounds and array.ndim >= 2:
        return _replace_tokens(array, keep, rate, rng)
    if array.dtype.kind == "f":
        return _noise(array, rate, rng)
    return array


def augment(
    data: Dataset,
    train: np.ndarray,
    copies: int,
    rate: float,
    bounds: dict[str, int],
    mask: str | None,
    seed: int,
) -> tuple[Dataset, np.ndarray]:
    """``data`` with ``copies`` altered copies of the ``train`` samples appended, and the
    training indices into it (originals first). Needs samples on axis 0 of every input."""
    if copies == 0:
        return data, train
    rng = np.random.default_rng(seed + 1)
    rows = np.tile(train, copies)
    keep = data.inputs[mask][rows] != 0 if mask is not None else None
    extra = {name: _copy(data, name, rows, bounds, keep, rate, rng) for name in data.inputs}
    grown = Dataset(
        inputs={n: np.concatenate([a, extra[n]]) for n, a in data.inputs.items()},
        labels=None if data.labels is None else np.concatenate([data.labels, data.labels[rows]]),
        groups={n: np.concatenate([c, c[rows]]) for n, c in data.groups.items()},
        source=data.source,
        sample_axes=data.sample_axes,
    )
    return grown, np.concatenate([train, data.samples + np.arange(len(rows))])
