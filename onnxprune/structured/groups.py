"""The objects structured pruning works with: slices of tensors coupled into groups.

A ``ChannelGroup`` is a set of units (channels, neurons or attention heads) that must be kept or
removed together, with every tensor slice that depends on them. A unit covers ``unit_size``
consecutive indices along each slice's axis (1 for a channel, ``head_dim`` for a head).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["AttributeEdit", "ChannelGroup", "ShapeEdit", "TensorSlice"]


@dataclass(frozen=True)
class TensorSlice:
    """An initializer whose ``axis`` follows the group's units.

    ``role`` is ``producer`` (its output channels are the units), ``consumer`` (its input
    channels are; ``node`` is the consuming node, for reconstruction) or ``param`` (bias,
    normalization parameter, elementwise constant).
    """

    tensor: str
    axis: int
    role: str
    node: str = ""


@dataclass(frozen=True)
class ShapeEdit:
    """A shape constant to rewrite when units go: ``value`` becomes ``per_unit * kept``."""

    node: str
    input_index: int
    position: int
    per_unit: int


@dataclass(frozen=True)
class AttributeEdit:
    """An integer attribute that counts units (depthwise Conv ``group``): becomes ``kept``."""

    node: str
    name: str


@dataclass
class ChannelGroup:
    """Units that are removed together, and everything that depends on them."""

    id: str
    kind: str  # "channels" (Conv), "neurons" (MatMul/Gemm) or "heads"
    units: int
    unit_size: int = 1
    slices: list[TensorSlice] = field(default_factory=list)
    shape_edits: list[ShapeEdit] = field(default_factory=list)
    attribute_edits: list[AttributeEdit] = field(default_factory=list)
    blocked: str | None = None

    @property
    def producers(self) -> list[TensorSlice]:
        return [s for s in self.slices if s.role == "producer"]

    @property
    def consumers(self) -> list[TensorSlice]:
        return [s for s in self.slices if s.role == "consumer"]

    def indices(self, kept_units: np.ndarray) -> np.ndarray:
        """Tensor indices along a slice's axis that belong to ``kept_units``."""
        offsets = np.arange(self.unit_size)
        return (np.asarray(kept_units)[:, None] * self.unit_size + offsets[None, :]).ravel()

    def describe(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "units": self.units,
            "unit_size": self.unit_size,
            "producers": [s.tensor for s in self.producers],
            "consumers": [s.tensor for s in self.consumers],
            "blocked": self.blocked,
        }
