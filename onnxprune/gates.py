"""Budgets (gates) and their verdicts on a verification result.

A gate compares one measured value with its limit; a value equal to the limit passes (within
``GATE_TOLERANCE``), and a value that cannot be measured fails. Group gates look at every
attribute (and intersection) and judge the worst one, leaving out groups smaller than the
minimum group size; their entry names the attribute and group that decided the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.tasks import Task

__all__ = [
    "DEFAULT_BUDGET",
    "GATE_TOLERANCE",
    "Gates",
    "default_gates",
    "evaluate_gates",
    "gate_result",
]

# compress's budget when the user sets none: agreement (classifiers) or cosine >= this.
DEFAULT_BUDGET = 0.95
# A measured value within this of its limit counts as at the limit (passes).
GATE_TOLERANCE = 1e-9

# gate -> (what the data must hold, the summary field judged, worst is the max (True) or min)
_GROUP_GATES = {
    "max_group_drop": ("labels", "worst_group_drop", True),
    "max_eo_increase": ("labels", "equalized_odds_increase", True),
    "max_dp_increase": ("binary", "demographic_parity_increase", True),
    "min_group_agreement": ("classifier", "lowest_group_agreement", False),
}


@dataclass(frozen=True)
class Gates:
    """Budgets; None means the gate is off. Drops, increases and agreements are fractions
    (0.01 = 1 pt). ``max_eo_increase``/``max_dp_increase`` limit how much the equalized-odds /
    demographic-parity difference between groups may grow; ``min_group_agreement`` is the
    lowest top-1 agreement with the baseline any group may have."""

    max_accuracy_drop: float | None = None
    max_group_drop: float | None = None
    min_agreement: float | None = None
    min_cosine: float | None = None
    max_eo_increase: float | None = None
    max_dp_increase: float | None = None
    min_group_agreement: float | None = None

    default: bool = False  # True when compress chose this budget (no gate was given)

    def limits(self) -> dict[str, float | None]:
        return {
            "max_accuracy_drop": self.max_accuracy_drop,
            "max_group_drop": self.max_group_drop,
            "max_eo_increase": self.max_eo_increase,
            "max_dp_increase": self.max_dp_increase,
            "min_group_agreement": self.min_group_agreement,
            "min_agreement": self.min_agreement,
            "min_cosine": self.min_cosine,
        }

    @property
    def active(self) -> bool:
        return any(value is not None for value in self.limits().values())

    def check_applicable(self, dataset: Dataset, task: Task) -> None:
        """Refuse gates that this dataset or task cannot evaluate, before any work is done."""
        if self.max_accuracy_drop is not None and dataset.labels is None:
            raise InputError("--max-accuracy-drop needs a 'label' array in the data")
        for gate, (needs, _, _) in _GROUP_GATES.items():
            if getattr(self, gate) is None:
                continue
            flag = "--" + gate.replace("_", "-")
            if needs == "labels" and (dataset.labels is None or not dataset.groups):
                raise InputError(f"{flag} needs 'label' and 'group.<attribute>' arrays")
            if not dataset.groups:
                raise InputError(f"{flag} needs 'group.<attribute>' arrays in the data")
            if not task.classification:
                raise InputError(f"{flag} needs a classifier output ({task.evidence})")
        if self.min_agreement is not None and not task.classification:
            raise InputError(
                "--min-agreement (top-1 agreement) needs a classifier output; the scored output "
                f"is {task.name or 'of unknown task'} ({task.evidence}): use --min-cosine, or "
                "--task classification if it is one"
            )


def default_gates(task: Task) -> Gates:
    """The budget ``compress`` checks when none is given: top-1 agreement for classifiers,
    output cosine otherwise (both at ``DEFAULT_BUDGET``)."""
    if task.classification:
        return Gates(min_agreement=DEFAULT_BUDGET, default=True)
    return Gates(min_cosine=DEFAULT_BUDGET, default=True)


def gate_result(name: str, limit: float, value: float | None, higher_is_better: bool) -> dict:
    """One gate's entry: a value within ``GATE_TOLERANCE`` of the limit passes; a value that
    could not be measured (None, NaN, infinite) fails with a note."""
    entry = {"gate": name, "limit": limit, "value": value}
    if value is None or not math.isfinite(value):
        entry.update(passed=False, note="not measurable on these outputs")
    elif higher_is_better:
        entry["passed"] = bool(value >= limit - GATE_TOLERANCE)
    else:
        entry["passed"] = bool(value <= limit + GATE_TOLERANCE)
    return entry


def _group_value(groups: dict, field: str, largest: bool) -> tuple[float | None, dict]:
    """The worst value of ``field`` over the attributes, and where it was found."""
    found = [(s[field], a, s) for a, s in groups.items() if s.get(field) is not None]
    if not found:
        return None, {}
    value, attribute, summary = (max if largest else min)(found, key=lambda item: item[0])
    where = {"attribute": attribute}
    group = {"worst_group_drop": "worst_group", "lowest_group_agreement": "lowest_agreement_group"}
    if field in group:
        where["group"] = summary.get(group[field])
    return value, where


def _group_gate(name: str, limit: float, groups: dict) -> dict:
    _, field, largest = _GROUP_GATES[name]
    value, where = _group_value(groups, field, largest)
    entry = {**gate_result(name, limit, value, higher_is_better=not largest), **where}
    if value is None:
        minimum = {s.get("min_group_size") for s in groups.values()} - {None}
        entry["note"] = (
            "not measurable: no attribute has a group with at least "
            f"{min(minimum) if minimum else '?'} samples (or the metric is undefined)"
        )
    return entry


def evaluate_gates(gates: Gates, verification: dict) -> list[dict]:
    """One entry per active gate: its limit, the measured value and whether it held.

    A value equal to the limit passes (compared with a tolerance of ``GATE_TOLERANCE``); a
    gate whose value could not be measured (not finite, or not defined for the task) fails.
    Group gates also give the ``attribute`` (and ``group``) that decided them. A candidate
    whose scored output is not finite where the baseline's is fails a ``finite_outputs`` gate
    that is always on.
    """
    quality = verification["quality"]
    measured = {
        "max_accuracy_drop": (quality.get("accuracy_drop"), False),
        "min_agreement": (quality.get("top1_agreement"), True),
        "min_cosine": (quality["cosine_mean"], True),
    }
    results = []
    for name, limit in gates.limits().items():
        if limit is None:
            continue
        if name in _GROUP_GATES:
            entry = _group_gate(name, limit, quality.get("groups") or {})
        else:
            entry = gate_result(name, limit, *measured[name])
        if gates.default:
            entry["default"] = True
        results.append(entry)
    finite = verification.get("finite_outputs", {})
    if finite.get("baseline", True) and not finite.get("candidate", True):
        results.append(
            {
                "gate": "finite_outputs",
                "limit": None,
                "value": None,
                "passed": False,
                "note": "the candidate's scored output has NaN or infinite values; the "
                "baseline's does not",
            }
        )
    return results
