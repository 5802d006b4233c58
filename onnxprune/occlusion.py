"""Occlusion: which units of a model input to hide, and the batch of occluded copies of a sample.

One input is explained; the others are copied unchanged. Its units depend on its kind:

* ``feature``: a float input ``[N, F]``; each feature is replaced by its mean over the data;
* ``patch``: a float image ``[N, C, H, W]``; square patches (all channels) of side ``patch``
  (default: at most 8 x 8 patches) are replaced by the mean image of the data;
* ``position``: a float sequence ``[N, T, D]``; each position is replaced by its mean;
* ``token``: integer ids ``[N, T]``; each real token is hidden by setting its attention mask to 0
  (padded positions, mask 0, are not units), or, without a mask input, replaced by id 0.

Anything else is refused with the reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from onnxprune.data import Dataset, InputSpec
from onnxprune.errors import InputError

__all__ = ["MAX_GRID", "Occluder", "make_occluder"]

# Image patches default to a grid of at most MAX_GRID x MAX_GRID.
MAX_GRID = 8
_MASK = re.compile(r"mask", re.IGNORECASE)
_IDS = re.compile(r"input_ids|^ids$|token", re.IGNORECASE)


@dataclass(frozen=True)
class Occluder:
    """How to hide the units of one input (see the module docstring)."""

    input: str
    kind: str
    shape: tuple[int, ...]  # one sample's shape of the explained input
    mask_input: str | None = None
    patch: int | None = None
    baseline: np.ndarray | None = None  # one sample's shape: the data mean (float kinds)

    @property
    def grid(self) -> tuple[int, int] | None:
        if self.kind != "patch":
            return None
        return math.ceil(self.shape[-2] / self.patch), math.ceil(self.shape[-1] / self.patch)

    @property
    def units(self) -> int:
        if self.kind == "patch":
            rows, cols = self.grid
            return rows * cols
        return self.shape[0]

    def describe(self) -> dict:
        """What a unit is and what it is replaced by, for the report."""
        hidden = {
            "feature": "the feature's mean over the evaluation data",
            "patch": "the mean image of the evaluation data (same patch)",
            "position": "the position's mean over the evaluation data",
            "token": f"attention mask 0 ('{self.mask_input}')" if self.mask_input else "token id 0",
        }[self.kind]
        entry = {"input": self.input, "unit": self.kind, "units": self.units, "occluded_by": hidden}
        if self.kind == "patch":
            entry.update(patch=self.patch, grid=list(self.grid))
        return entry

    def present(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """Indices of the units that can be occluded in this one-sample feed."""
        if self.kind == "token" and self.mask_input:
            return np.flatnonzero(feed[self.mask_input][0] != 0)
        return np.arange(self.units)

    def copies(self, feed: dict[str, np.ndarray], units: np.ndarray) -> dict[str, np.ndarray]:
        """Row 0: the sample; row 1 + i: the sample with ``units[i]`` hidden."""
        rows = len(units) + 1
        batch = {name: np.repeat(array, rows, axis=0) for name, array in feed.items()}
        target = self.mask_input if self.kind == "token" and self.mask_input else self.input
        hidden = batch[target]
        for row, unit in enumerate(units, start=1):
            self._hide(hidden[row], int(unit))
        return batch

    def _hide(self, sample: np.ndarray, unit: int) -> None:
        if self.kind == "token":
            sample[unit] = 0
        elif self.kind == "patch":
            r, c = divmod(unit, self.grid[1])
            window = (..., slice(r * self.patch, (r + 1) * self.patch),
                      slice(c * self.patch, (c + 1) * self.patch))  # fmt: skip
            sample[window] = self.baseline[window]
        else:
            sample[unit] = self.baseline[unit]


def _explained(specs: list[InputSpec]) -> tuple[InputSpec, InputSpec | None]:
    masks = [s for s in specs if _MASK.search(s.name) and s.dtype.kind in "iub"]
    if any(s.sample_axis not in (0, None) for s in specs):
        raise InputError("--explain: an input keeps its samples on a later axis (not supported)")
    others = [s for s in specs if s not in masks and s.sample_axis == 0]
    floats = [s for s in others if s.dtype.kind == "f"]
    ids = [s for s in others if s.dtype.kind in "iu" and len(s.dims) == 2]
    if len(floats) == 1 and not ids:
        return floats[0], None
    named = [s for s in ids if _IDS.search(s.name) and "type" not in s.name.lower()]
    if not floats and (named or len(ids) == 1):
        return (named or ids)[0], masks[0] if len(masks) == 1 else None
    listed = ", ".join(s.describe() for s in specs)
    raise InputError(
        f"--explain needs one float input or one token-id input to occlude; the model has {listed}"
    )


def _patch(shape: tuple[int, ...], patch: int | None) -> int:
    side = patch or math.ceil(max(shape[-2:]) / MAX_GRID)
    if side < 1 or side > max(shape[-2:]):
        raise InputError(f"--explain-patch {side} does not fit an image of {shape[-2:]}")
    return side


def make_occluder(specs: list[InputSpec], dataset: Dataset, patch: int | None = None) -> Occluder:
    """The occluder for the model inputs ``specs`` on ``dataset`` (baselines from its mean)."""
    spec, mask = _explained(specs)
    array = dataset.inputs[spec.name]
    shape = tuple(array.shape[1:])
    if spec.dtype.kind in "iu":
        return Occluder(spec.name, "token", shape, mask.name if mask else None)
    kinds = {1: "feature", 2: "position", 3: "patch"}
    if len(shape) not in kinds:
        raise InputError(
            f"--explain: input {spec.describe()} is neither [N, F] features, [N, T, D] "
            "positions nor an [N, C, H, W] image"
        )
    kind = kinds[len(shape)]
    baseline = array.astype(np.float64).mean(axis=0).astype(array.dtype)
    side = _patch(shape, patch) if kind == "patch" else None
    if patch is not None and kind != "patch":
        raise InputError(f"--explain-patch applies to images; '{spec.name}' holds {kind}s")
    return Occluder(spec.name, kind, shape, None, side, baseline)
