"""Group columns for per-group metrics: readable names, a stable order, and intersections.

A group column (``group.<attribute>`` in the data) becomes a ``GroupColumn``: one name per
group and, per sample, the index of its group. Names are what a reader expects: byte strings
decoded as UTF-8, integers written as integers and sorted numerically (2 before 10), and the
empty string shown as ``(empty)``. Intersections of attributes (``cross``) are columns of their
own, named ``race&sex`` with groups such as ``Black & Female``; only combinations that occur
in the data are groups.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from onnxprune.errors import InputError
from onnxprune.fairness_rates import DEFAULT_MIN_POSITIVES

__all__ = [
    "CROSS_ALL",
    "EMPTY_GROUP",
    "GroupColumn",
    "GroupOptions",
    "crossed_attributes",
    "group_columns",
]

EMPTY_GROUP = "(empty)"
CROSS_ALL = "all"
_JOIN_ATTRIBUTE, _JOIN_GROUP = "&", " & "


@dataclass(frozen=True)
class GroupOptions:
    """How groups are formed and judged.

    Attributes:
        min_group_size: groups with fewer samples are reported and marked, but left out of the
            gaps, the worst group and the gates.
        cross: intersections to add: each item names attributes joined by commas
            (``"race,sex"``), or is ``"all"`` for every pair of attributes.
        bootstrap: paired-bootstrap resamples for each group's accuracy-drop interval (0: none).
        seed: seed of the bootstrap (the same seed gives the same intervals).
        min_group_positives: a group's TPR (FPR) resting on fewer positives (negatives) is
            reported but left out of the equalized-odds difference and its gate.
    """

    min_group_size: int = 30
    cross: tuple[str, ...] = field(default_factory=tuple)
    bootstrap: int = 1000
    seed: int = 0
    min_group_positives: int = DEFAULT_MIN_POSITIVES

    def validate(self) -> None:
        if self.min_group_size < 1:
            raise InputError(f"min_group_size must be at least 1, not {self.min_group_size}")
        if self.bootstrap < 0:
            raise InputError(f"bootstrap must be 0 (off) or more resamples, not {self.bootstrap}")
        if self.min_group_positives < 1:
            raise InputError(
                f"min_group_positives must be at least 1, not {self.min_group_positives}"
            )


@dataclass(frozen=True)
class GroupColumn:
    """One attribute: group names in report order, and each sample's index into them."""

    names: list[str]
    codes: np.ndarray

    def rows(self, index: int) -> np.ndarray:
        return self.codes == index


def _name(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value)
    return text if text else EMPTY_GROUP


def _column(values: np.ndarray) -> GroupColumn:
    """Names sorted numerically for numbers, as text otherwise."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace")
    unique, codes = np.unique(values, return_inverse=True)
    if unique.dtype.kind in "iufb":
        return GroupColumn([_name(v) for v in unique.tolist()], codes.reshape(-1))
    names = [_name(v) for v in unique.tolist()]
    order = sorted(range(len(names)), key=lambda i: names[i])
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return GroupColumn([names[i] for i in order], rank[codes.reshape(-1)])


def _cross(columns: list[GroupColumn]) -> GroupColumn:
    combined = np.zeros(len(columns[0].codes), np.int64)
    for column in columns:
        combined = combined * len(column.names) + column.codes
    present, codes = np.unique(combined, return_inverse=True)
    names = []
    for code in present.tolist():
        parts = []
        for column in reversed(columns):
            code, index = divmod(code, len(column.names))
            parts.append(column.names[index])
        names.append(_JOIN_GROUP.join(reversed(parts)))
    return GroupColumn(names, codes.reshape(-1))


def crossed_attributes(cross: tuple[str, ...], attributes: list[str]) -> list[tuple[str, ...]]:
    """The intersections ``cross`` asks for, as tuples of attribute names.

    Raises:
        InputError: an intersection names an unknown attribute, or fewer than two.
    """
    wanted: list[tuple[str, ...]] = []
    for item in cross:
        if item.strip() == CROSS_ALL:
            wanted += list(itertools.combinations(sorted(attributes), 2))
            continue
        names = tuple(dict.fromkeys(n.strip() for n in item.split(",") if n.strip()))
        unknown = [n for n in names if n not in attributes]
        if unknown:
            have = ", ".join(sorted(attributes)) or "none"
            raise InputError(
                f"group cross '{item}': no 'group.{unknown[0]}' array in the data "
                f"(group attributes: {have})"
            )
        if len(names) < 2:
            raise InputError(f"group cross '{item}' needs two or more attributes, e.g. race,sex")
        wanted.append(names)
    return list(dict.fromkeys(wanted))


def group_columns(
    groups: dict[str, np.ndarray], cross: tuple[str, ...] = ()
) -> dict[str, GroupColumn]:
    """Every attribute (sorted by name), then each intersection, as a ``GroupColumn``."""
    columns = {attribute: _column(groups[attribute]) for attribute in sorted(groups)}
    for names in crossed_attributes(cross, list(groups)):
        columns[_JOIN_ATTRIBUTE.join(names)] = _cross([columns[n] for n in names])
    return columns
