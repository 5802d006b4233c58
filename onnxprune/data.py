"""The project's data format: one ``.npz`` file of samples, checked against the model.

Arrays are named like the model's inputs, with samples on the first axis and the model input's
rank; an optional integer ``label`` array; optional ``group.<attribute>`` arrays (strings or
integers) for per-group metrics. Every mismatch is an ``InputError`` naming the array.
Without a data file, ``synthetic_dataset`` builds inputs from the model's input spec.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxprune.errors import InputError
from onnxprune.npz import read_npz

__all__ = [
    "Dataset",
    "InputSpec",
    "index_bounds",
    "input_specs",
    "load_dataset",
    "synthetic_dataset",
]

logger = logging.getLogger(__name__)

LABEL = "label"
MAX_SYNTHETIC_BYTES = 1 << 30
SYNTHETIC_DIM = 16
SYNTHETIC_IMAGE_DIM = 64
GROUP_PREFIX = "group."


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, numpy dtype, dims (int for static, str or None for dynamic) and the
    axis that carries samples (None for a 0-d input, fed whole to every batch)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | str | None, ...]
    sample_axis: int | None = 0

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name}: {self.dtype}[{dims}]"


def _dim(dim: ir.SymbolicDim | int) -> int | str | None:
    if isinstance(dim, int):
        return dim if dim >= 0 else None
    return dim.value or None


def _sample_axes(dims: dict[str, tuple[int | str | None, ...]]) -> dict[str, int | None]:
    """Samples lie on axis 0, except where an input's axis 0 is static while other inputs have a
    dynamic axis 0 and a later axis is the batch: the one carrying their batch symbol, or, with
    unnamed dims, its only dynamic axis (a recurrent state ``[layers, batch, h]``). 0-d inputs
    have no sample axis."""
    batch_symbols = {d[0] for d in dims.values() if d and isinstance(d[0], str)}
    dynamic_batch = any(d and not isinstance(d[0], int) for d in dims.values())
    axes: dict[str, int | None] = {}
    for name, shape in dims.items():
        axis: int | None = 0 if shape else None
        if shape and isinstance(shape[0], int) and dynamic_batch:
            named = [i for i, d in enumerate(shape) if d in batch_symbols]
            unnamed = [i for i, d in enumerate(shape) if d is None]
            axis = named[0] if named else (unnamed[0] if len(unnamed) == 1 else 0)
        axes[name] = axis
    return axes


def input_specs(model: ir.Model) -> list[InputSpec]:
    """The model's real inputs (initializers listed as inputs are left out)."""
    dims, dtypes = {}, {}
    for value in model.graph.inputs:
        if value.name in model.graph.initializers:
            continue
        if value.dtype is None or value.shape is None:
            raise InputError(f"model input '{value.name}' has no tensor type or shape")
        dims[value.name] = tuple(_dim(d) for d in value.shape)
        dtypes[value.name] = np.dtype(value.dtype.numpy())
    axes = _sample_axes(dims)
    return [InputSpec(name, dtypes[name], dims[name], axes[name]) for name in dims]


@dataclass
class Dataset:
    """Model inputs, optional labels and group columns, all with the same number of samples.

    ``sample_axes`` says where each input keeps its samples (default axis 0; None for a 0-d
    input that every batch receives whole).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    synthetic: bool = False
    sample_axes: dict[str, int | None] = field(default_factory=dict)

    def axis(self, name: str) -> int | None:
        return self.sample_axes.get(name, 0)

    @property
    def samples(self) -> int:
        for name, array in self.inputs.items():
            axis = self.axis(name)
            if axis is not None:
                return array.shape[axis]
        return 1

    def slice(self, start: int, stop: int) -> dict[str, np.ndarray]:
        feed = {}
        for name, array in self.inputs.items():
            axis = self.axis(name)
            if axis is None:
                feed[name] = array
            else:
                index = [slice(None)] * array.ndim
                index[axis] = slice(start, stop)
                feed[name] = array[tuple(index)]
        return feed


def _samples_where(spec: InputSpec) -> str:
    if spec.sample_axis is None:
        return "a 0-d input: one value, fed to every batch"
    return f"samples on axis {spec.sample_axis}"


def _check_input(path: Path, spec: InputSpec, array: np.ndarray) -> None:
    if array.dtype != spec.dtype:
        raise InputError(
            f"{path}: array '{spec.name}' has dtype {array.dtype}, the model expects {spec.dtype}"
        )
    if array.ndim != len(spec.dims):
        raise InputError(
            f"{path}: array '{spec.name}' has shape {array.shape}, the model expects rank "
            f"{len(spec.dims)} ({spec.describe()}; {_samples_where(spec)})"
        )
    for axis, (got, want) in enumerate(zip(array.shape, spec.dims, strict=True)):
        if axis != spec.sample_axis and isinstance(want, int) and got != want:
            raise InputError(
                f"{path}: array '{spec.name}' has shape {array.shape}, the model expects "
                f"{spec.describe()} (axis {axis} differs; {_samples_where(spec)})"
            )
    if spec.sample_axis is None:
        return
    batch, count = spec.dims[spec.sample_axis], array.shape[spec.sample_axis]
    if isinstance(batch, int) and count % batch:
        raise InputError(
            f"{path}: array '{spec.name}' has {count} samples, not a multiple of the "
            f"model's fixed batch size {batch}"
        )


def _check_column(path: Path, name: str, array: np.ndarray, kinds: str) -> None:
    if array.ndim < 1 or array.dtype.kind not in kinds:
        raise InputError(f"{path}: array '{name}' must be a 1-D array of kind {kinds!r}")


def _as_text(path: Path, name: str, column: np.ndarray) -> np.ndarray:
    """Byte-string columns (``S`` arrays) as unicode text, so groups are named ``Male``."""
    if column.dtype.kind != "S":
        return column
    try:
        return np.char.decode(column, "utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: array '{name}' holds bytes that are not UTF-8 text") from error


def _warn_non_finite(path: Path, inputs: dict[str, np.ndarray]) -> None:
    for name, array in inputs.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            logger.warning(
                "warning: %s: array '%s' holds %d NaN or infinite values; outputs computed "
                "from them are not finite either",
                path,
                name,
                int(np.count_nonzero(~np.isfinite(array))),
            )


def load_dataset(path: str | os.PathLike, specs: list[InputSpec]) -> Dataset:
    """Read ``path`` and check it against the model's inputs."""
    path = Path(path)
    arrays = read_npz(path)
    expected = {spec.name for spec in specs}
    for name in arrays:
        if name not in expected and name != LABEL and not name.startswith(GROUP_PREFIX):
            raise InputError(
                f"{path}: array '{name}' is not a model input ({', '.join(sorted(expected))}), "
                f"'{LABEL}' or '{GROUP_PREFIX}<attribute>'"
            )
    for spec in specs:
        if spec.name not in arrays:
            raise InputError(
                f"{path}: no array named '{spec.name}' (model input {spec.describe()})"
            )
        _check_input(path, spec, arrays[spec.name])
    labels = arrays.get(LABEL)
    if labels is not None:
        _check_column(path, LABEL, labels, "iub")
    groups = {
        n[len(GROUP_PREFIX) :]: _as_text(path, n, a)
        for n, a in arrays.items()
        if n.startswith(GROUP_PREFIX)
    }
    for attribute, column in groups.items():
        _check_column(path, GROUP_PREFIX + attribute, column, "iuUSb")
        if column.ndim != 1:
            raise InputError(f"{path}: array '{GROUP_PREFIX}{attribute}' must be 1-D")
    axes = {spec.name: spec.sample_axis for spec in specs}
    lengths = {
        name: array.shape[axes.get(name, 0)]
        for name, array in arrays.items()
        if axes.get(name, 0) is not None
    }
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{n}={k}" for n, k in sorted(lengths.items()))
        raise InputError(f"{path}: arrays have different numbers of samples ({listed})")
    if not lengths or min(lengths.values()) == 0:
        raise InputError(f"{path}: holds no samples")
    inputs = {spec.name: arrays[spec.name] for spec in specs}
    _warn_non_finite(path, inputs)
    return Dataset(inputs, labels, groups, source=str(path), sample_axes=axes)


def index_bounds(model: ir.Model) -> dict[str, int]:
    """For integer inputs used directly as Gather indices: the size of the gathered axis."""
    bounds: dict[str, int] = {}
    for value in model.graph.inputs:
        for use in value.uses():
            node = use.node
            table = node.inputs[0] if node.op_type == "Gather" and use.idx == 1 else None
            if table is not None and table.shape is not None:
                size = table.shape[node.attributes.get_int("axis", 0)]
                if isinstance(size, int):
                    bounds[value.name] = min(size, bounds.get(value.name, size))
    return bounds


def _synthetic_dims(spec: InputSpec) -> list[int]:
    """Dims of one made-up sample: dynamic spatial dims of an image-like input (float, rank 4)
    are ``SYNTHETIC_IMAGE_DIM`` (a detector downsamples by 32), other dynamic dims
    ``SYNTHETIC_DIM``."""
    image = spec.dtype.kind == "f" and len(spec.dims) == 4
    return [
        d if isinstance(d, int) else (SYNTHETIC_IMAGE_DIM if image and axis >= 2 else SYNTHETIC_DIM)
        for axis, d in enumerate(spec.dims)
    ]


def _synthetic_array(
    spec: InputSpec, samples: int, rng: np.random.Generator, bound: int | None
) -> np.ndarray:
    shape = _synthetic_dims(spec)
    if spec.sample_axis is not None:
        declared = spec.dims[spec.sample_axis]
        shape[spec.sample_axis] = samples * (declared if isinstance(declared, int) else 1)
    if spec.dtype.kind == "f":
        return np.asarray(rng.standard_normal(shape)).astype(spec.dtype)
    if spec.dtype.kind == "b" or "mask" in spec.name.lower():
        return np.ones(shape, dtype=spec.dtype)
    return np.asarray(rng.integers(0, min(100, bound or 100), size=shape)).astype(spec.dtype)


def _check_synthetic_size(specs: list[InputSpec], samples: int) -> None:
    """Refuse inputs whose static dims would make synthetic samples absurdly large."""
    for spec in specs:
        elements = samples * math.prod(_synthetic_dims(spec))
        if elements * 8 > MAX_SYNTHETIC_BYTES:  # drawn as float64 or int64 first
            raise InputError(
                f"model input {spec.describe()} would need {elements * 8 / (1 << 30):,.1f} GiB "
                f"for {samples} synthetic samples; give real data (--data)"
            )


def synthetic_dataset(
    specs: list[InputSpec],
    samples: int = 32,
    seed: int = 0,
    bounds: dict[str, int] | None = None,
) -> Dataset:
    """Inputs drawn from the model's input spec, for agreement checks without data.

    Floats are standard normal; integers uniform in [0, 100), or in [0, n) when the input
    indexes a table of n rows (``bounds``, see ``index_bounds``: token type ids index 2);
    inputs named like a mask are all ones; dynamic dims other than the sample axis are
    ``SYNTHETIC_DIM`` (16), or ``SYNTHETIC_IMAGE_DIM`` (64) for the height and width of an
    image (set real ones with an input shape override); 0-d inputs get one value.
    """
    _check_synthetic_size(specs, samples)
    rng = np.random.default_rng(seed)
    bounds = bounds or {}
    inputs = {s.name: _synthetic_array(s, samples, rng, bounds.get(s.name)) for s in specs}
    return Dataset(
        inputs,
        source=f"synthetic ({samples} samples, seed {seed})",
        synthetic=True,
        sample_axes={s.name: s.sample_axis for s in specs},
    )
