"""Calibration samples in fixed mini-batches ("chunks"): training, validation and test.

The split is a seeded permutation: the last ``held_out`` fraction (at least one sample) is never
trained on. Its first half (rounded up) is the validation part, which picks the epoch to keep
(early stopping); the second half, the test part, is used for nothing but measuring: a block
keeps its trained weights only if the test part shows the gain, and the held-out losses in the
report are the test part's, so a gain picked by luck on the validation part is never claimed.
Chunks keep their members for
the whole run, so every cached activation (including shape tensors computed from the batch size)
stays valid; only their order is shuffled per epoch.

With a mask input (``attention_mask``), samples are grouped by real length and each chunk is cut
to its longest real sample: with right padding, a masked model computes the same values at real
positions, and teacher targets are computed on the same cut inputs, so the loss is unchanged while
the work shrinks (MiniLM's 64-token calibration averages 20 real tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxprune.data import Dataset
from onnxprune.errors import InputError

__all__ = ["Chunk", "make_chunks", "split_samples"]


@dataclass
class Chunk:
    """One mini-batch: dataset indices, the model inputs, real positions and cached tensors."""

    indices: np.ndarray
    feed: dict[str, np.ndarray]
    keep: np.ndarray | None = None  # [samples, positions] bool, from the mask input
    labels: np.ndarray | None = None
    env: dict = field(default_factory=dict)  # student tensors at the current cut
    targets: dict = field(default_factory=dict)  # teacher tensors by name


def split_samples(
    samples: int, held_out: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training, validation and test sample indices (each sorted)."""
    if samples < 2:
        raise InputError(
            f"repair needs at least 2 calibration samples (one to train, one held out), got "
            f"{samples}"
        )
    count = min(samples - 1, max(1, round(held_out * samples)))
    order = np.random.default_rng(seed).permutation(samples)
    held, middle = order[samples - count :], (count + 1) // 2
    return np.sort(order[: samples - count]), np.sort(held[:middle]), np.sort(held[middle:])


def _take(dataset: Dataset, indices: np.ndarray) -> dict[str, np.ndarray]:
    feed = {}
    for name, array in dataset.inputs.items():
        axis = dataset.axis(name)
        feed[name] = array if axis is None else np.take(array, indices, axis=axis)
    return feed


def _trim(feed: dict[str, np.ndarray], mask: str) -> dict[str, np.ndarray]:
    """Cut the trailing positions that no sample of the chunk uses from every input shaped like
    the mask (at least 2 positions stay: dynamo exports declare a minimum of 2)."""
    keep = feed[mask] != 0
    real = np.flatnonzero(keep.any(axis=0)) if keep.ndim == 2 else np.zeros(0)
    if not real.size:
        return feed
    length, shape = max(2, int(real[-1]) + 1), feed[mask].shape
    return {
        name: a[:, :length] if a.ndim >= 2 and a.shape[:2] == shape else a
        for name, a in feed.items()
    }


def make_chunks(
    dataset: Dataset,
    indices: np.ndarray,
    batch: int,
    mask: str | None,
    trim: bool,
) -> list[Chunk]:
    """Chunks of ``batch`` samples from ``indices`` (by real length when ``mask`` is given)."""
    order = np.asarray(indices)
    if mask is not None and dataset.inputs[mask].ndim == 2:
        lengths = (dataset.inputs[mask][order] != 0).sum(axis=1)
        order = order[np.argsort(lengths, kind="stable")]
    chunks = []
    for start in range(0, len(order), batch):
        members = order[start : start + batch]
        feed = _take(dataset, members)
        if mask is not None and trim:
            feed = _trim(feed, mask)
        keep = feed[mask] != 0 if mask is not None else None
        labels = dataset.labels[members] if dataset.labels is not None else None
        chunks.append(Chunk(members, feed, keep, labels))
    return chunks
