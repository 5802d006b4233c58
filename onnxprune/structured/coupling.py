"""Merge per-producer channel traces into groups, unit by unit.

The tracer (``dependency``) follows each producer's channels and records, in that producer's
own unit numbering, every tensor slice and counted integer it reaches (``Piece``, ``Count``)
and every other producer whose channels meet its own in an elementwise op (``Coupling``): unit
a of one producer and unit b of another are the same channel of a residual ``Add``. Routed
channels (Concat, Split, Slice) make those meetings partial or shifted, so couplings are kept
per unit: ``build_groups`` joins coupled units (union-find), makes one group of producers that
share any unit, numbers the group's units in producer order (a lone or fully coupled producer
keeps its own numbering), and translates every piece into group units. A position that two
unrelated units claim blocks the group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxprune.routing import CountSite
from onnxprune.structured.groups import (
    AttributeEdit,
    ChannelGroup,
    CountEdit,
    ShapeEdit,
    TensorSlice,
)

__all__ = ["Count", "Coupling", "Piece", "Segments", "Trace", "build_groups", "shifted"]

# Runs of consecutive units: (first unit, end unit, position of the first unit on the axis).
Segments = tuple[tuple[int, int, int], ...]


def shifted(segments: Segments, start: int, stop: int, offset: int) -> Segments:
    """The runs at positions ``[start, stop)``, moved so that ``start`` lands on ``offset``."""
    found = []
    for first, end, position in segments:
        low, high = max(position, start), min(position + end - first, stop)
        if low < high:
            found.append((first + low - position, first + high - position, low - start + offset))
    return tuple(found)


@dataclass(frozen=True)
class Piece:
    """An initializer axis that the producer's units reach, ``size`` positions long."""

    tensor: str
    axis: int
    role: str
    node: str
    segments: Segments
    size: int


@dataclass(frozen=True)
class Count:
    """An integer of ``node`` counting the positions the ``segments`` occupy."""

    node: str
    site: CountSite
    segments: Segments


@dataclass(frozen=True)
class Coupling:
    """``partner``'s units at the same positions as this producer's are the same channels."""

    partner: str
    mine: Segments
    theirs: Segments


@dataclass
class Trace:
    """Everything one producer's channels reach, in its own unit numbering."""

    units: int
    kind: str
    pieces: list[Piece] = field(default_factory=list)
    counts: list[Count] = field(default_factory=list)
    couplings: list[Coupling] = field(default_factory=list)
    blocked: str | None = None


class _UnitSets:
    """Union-find over every producer's units, and over producers that share units."""

    def __init__(self, traces: dict[str, Trace]) -> None:
        self.base, total = {}, 0
        for name, trace in traces.items():
            self.base[name], total = total, total + trace.units
        self.parent = list(range(total))
        self.layer = {name: name for name in traces}

    def find(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def _find_layer(self, name: str) -> str:
        while self.layer[name] != name:
            name = self.layer[name]
        return name

    def couple(self, name: str, coupling: Coupling) -> None:
        self.layer[self._find_layer(coupling.partner)] = self._find_layer(name)
        mine, theirs = self.base[name], self.base[coupling.partner]
        for a, b in _pairs(coupling):
            self.parent[self.find(theirs + b)] = self.find(mine + a)

    def layer_sets(self) -> list[list[str]]:
        members: dict[str, list[str]] = {}
        for name in self.layer:
            members.setdefault(self._find_layer(name), []).append(name)
        return list(members.values())


def _pairs(coupling: Coupling):
    """(my unit, partner unit) at each position both occupy."""
    for first, end, position in coupling.mine:
        for other, other_end, at in coupling.theirs:
            low = max(position, at)
            high = min(position + end - first, at + other_end - other)
            for x in range(low, high):
                yield first + x - position, other + x - at


def build_groups(traces: dict[str, Trace]) -> list[ChannelGroup]:
    """Groups of coupled producers, in the order of their first producer (see the module)."""
    units = _UnitSets(traces)
    for name, trace in traces.items():
        for coupling in trace.couplings:
            if coupling.partner not in traces:
                trace.blocked = trace.blocked or (
                    f"couples with '{coupling.partner}', which is not a layer"
                )
                continue
            units.couple(name, coupling)
    return [_Group(names, traces, units).build() for names in units.layer_sets()]


class _Group:
    """One group of producers: their units numbered, their pieces translated."""

    def __init__(self, names: list[str], traces: dict[str, Trace], units: _UnitSets) -> None:
        self.names, self.traces, self.sets = names, traces, units
        self.number: dict[int, int] = {}
        for name in names:
            for unit in range(traces[name].units):
                self.number.setdefault(units.find(units.base[name] + unit), len(self.number))
        self.blocked = next((traces[n].blocked for n in names if traces[n].blocked), None)

    def _positions(self, name: str, segments: Segments, table: dict[int, int], what: str):
        base = self.sets.base[name]
        for first, end, position in segments:
            for unit in range(first, end):
                number = self.number[self.sets.find(base + unit)]
                if table.setdefault(position + unit - first, number) != number:
                    self.blocked = self.blocked or (
                        f"position {position + unit - first} of {what} follows two channel sets"
                    )

    def build(self) -> ChannelGroup:
        kinds = {self.traces[n].kind for n in self.names}
        group = ChannelGroup(
            id=self.names[0],
            kind="channels" if "channels" in kinds else "neurons",
            units=len(self.number),
        )
        slices: dict[tuple, dict[int, int]] = {}
        sizes: dict[tuple, int] = {}
        counts: dict[tuple, dict[int, int]] = {}
        for name in self.names:
            for piece in self.traces[name].pieces:
                key = (piece.tensor, piece.axis, piece.role, piece.node)
                sizes[key] = piece.size
                self._positions(name, piece.segments, slices.setdefault(key, {}), piece.tensor)
            for count in self.traces[name].counts:
                table = counts.setdefault((count.node, count.site), {})
                self._positions(name, count.segments, table, f"'{count.node}'")
        for key, table in slices.items():
            group.slices.append(self._slice(key, table, sizes[key], group.units))
        for (node, site), table in counts.items():
            self._count(group, node, site, table)
        group.blocked = self.blocked
        return group

    @staticmethod
    def _slice(key: tuple, table: dict[int, int], size: int, units: int) -> TensorSlice:
        positions = tuple(sorted(table))
        numbers = tuple(table[p] for p in positions)
        if size == units and positions == numbers == tuple(range(units)):
            return TensorSlice(*key)
        return TensorSlice(*key, units=numbers, positions=positions)

    @staticmethod
    def _count(group: ChannelGroup, node: str, site: CountSite, table: dict[int, int]) -> None:
        positions = tuple(sorted(table))
        numbers = tuple(table[p] for p in positions)
        whole = positions == numbers == tuple(range(group.units))
        if whole and site.base[site.position] == group.units and not site.created:
            if site.scalar:  # kept as the edits widening also understands
                group.attribute_edits.append(AttributeEdit(node, site.attribute))
                return
            if site.input is not None and site.drop is None:
                group.shape_edits.append(ShapeEdit(node, site.input, site.position, 1))
                return
        group.count_edits.append(CountEdit(node, site, numbers, positions))
