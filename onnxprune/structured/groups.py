"""The objects structured pruning works with: slices of tensors coupled into groups.

A ``ChannelGroup`` is a set of units (channels, neurons or attention heads) that must be kept or
removed together, with every tensor slice that depends on them. A unit covers ``unit_size``
consecutive indices along each slice's axis (1 for a channel, ``head_dim`` for a head), unless
the slice maps units to positions explicitly: channels routed through Concat, Split or Slice sit
at other positions of a tensor that other groups share (``TensorSlice.units``/``positions``),
and the integers counting them (Split sizes, Slice bounds) lose one per removed position
(``CountEdit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxprune.routing import CountSite

__all__ = ["AttributeEdit", "ChannelGroup", "CountEdit", "ShapeEdit", "TensorSlice"]


@dataclass(frozen=True)
class TensorSlice:
    """An initializer whose ``axis`` follows the group's units.

    ``role`` is ``producer`` (its output channels are the units), ``consumer`` (its input
    channels are; ``node`` is the consuming node, for reconstruction) or ``param`` (bias,
    normalization parameter, elementwise constant). ``units``/``positions``, when given, say
    that unit ``units[i]`` sits at ``positions[i]`` (unit_size 1) and that the other positions
    of the axis are not the group's; without them unit u covers the whole axis from
    ``u * unit_size``.
    """

    tensor: str
    axis: int
    role: str
    node: str = ""
    units: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None


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


@dataclass(frozen=True)
class CountEdit:
    """An integer of ``node`` (``site``: Split size, Slice bound, ...) that counts the
    ``positions`` on the routed axis, where units ``units`` sit: it loses one per removed one."""

    node: str
    site: CountSite
    units: tuple[int, ...]
    positions: tuple[int, ...]


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
    count_edits: list[CountEdit] = field(default_factory=list)
    blocked: str | None = None

    @property
    def routed(self) -> bool:
        """Whether some unit sits at other positions than its own index (see the module)."""
        return bool(self.count_edits) or any(s.units is not None for s in self.slices)

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

    def removed_positions(self, piece: TensorSlice, removed_units: np.ndarray) -> np.ndarray:
        """Indices along ``piece.axis`` that go with ``removed_units``."""
        if piece.units is None:
            return self.indices(removed_units)
        gone = np.isin(np.asarray(piece.units), removed_units)
        return np.asarray(piece.positions, dtype=np.int64)[gone]

    def unit_values(self, piece: TensorSlice, values: np.ndarray) -> np.ndarray:
        """Per-index ``values`` along ``piece.axis``, summed onto the group's indices."""
        if piece.units is None:
            return values
        total = np.zeros(self.units * self.unit_size, dtype=np.float64)
        np.add.at(total, np.asarray(piece.units), values[np.asarray(piece.positions)])
        return total

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
