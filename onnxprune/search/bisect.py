"""Verified bisection on the global level, then greedy reverting of the most sensitive layers.

Every candidate is verified (``evaluate`` runs the gates on the selection half). The highest
level is tried first; while it breaks a gate, the level is bisected between the last level
that held (0, the dense model, at first) and the last that broke. Then, NNCF-style, starting
from the lowest level that broke, the layer whose step down to the next lower level saves the
most estimated cost is reverted, one at a time, until the gates hold or ``reverts`` are
spent; that configuration removes more than the bisection's best when it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from onnxprune.errors import NothingToPrune
from onnxprune.search.sensitivity import LayerCurve

__all__ = ["Budget", "BudgetSpent", "Outcome", "revert_most_sensitive", "verified_bisection"]


class BudgetSpent(Exception):
    """``--max-evals`` or ``--max-time`` is used up: the search stops with its best so far."""


@dataclass
class Budget:
    """How many candidates may still be evaluated, and until when."""

    max_evals: int | None = None
    max_time: float | None = None
    started: float = field(default_factory=time.monotonic)
    evaluated: int = 0
    reused: int = 0
    stopped: str | None = None

    def spend(self) -> None:
        """Count one evaluation, or raise ``BudgetSpent`` when none is left."""
        if self.max_evals is not None and self.evaluated + self.reused >= self.max_evals:
            self.stopped = f"--max-evals {self.max_evals} reached"
            raise BudgetSpent(self.stopped)
        if self.max_time is not None and time.monotonic() - self.started >= self.max_time:
            self.stopped = f"--max-time {self.max_time:g} s reached"
            raise BudgetSpent(self.stopped)


@dataclass(frozen=True)
class Outcome:
    """One verified candidate: whether its gates held and its objective (lower is better)."""

    key: str
    passed: bool
    objective: float
    allocation: dict[str, float]
    record: dict

    def beats(self, other: Outcome | None) -> bool:
        return self.passed and (other is None or self.objective < other.objective)


def revert_most_sensitive(
    curves: list[LayerCurve], levels: tuple[float, ...], allocation: dict[str, float]
) -> dict[str, float] | None:
    """``allocation`` with its most sensitive layer one level lower (None when that would
    leave every layer dense: not a compression)."""
    best_name, best_saving = None, -1.0
    for curve in curves:
        k = levels.index(allocation[curve.name])
        if k == 0:
            continue
        saving = curve.errors[k] - curve.errors[k - 1]
        if saving > best_saving:
            best_name, best_saving = curve.name, saving
    if best_name is None:
        return None
    lowered = dict(allocation)
    lowered[best_name] = levels[levels.index(allocation[best_name]) - 1]
    return lowered if any(lowered.values()) else None  # all zeros is the dense model


def verified_bisection(
    evaluate: Callable[[dict[str, float]], Outcome],
    allocate: Callable[[float], dict[str, float]],
    revert: Callable[[dict[str, float]], dict[str, float] | None],
    high: float,
    steps: int,
    reverts: int,
) -> tuple[Outcome | None, list[dict]]:
    """The best passing candidate found (None if none) and the trace of global levels tried."""
    trace: list[dict] = []
    best: Outcome | None = None

    def attempt(allocation: dict[str, float], step: str, level: float | None) -> Outcome:
        nonlocal best
        outcome = evaluate(allocation)
        trace.append({"step": step, "level": level, "key": outcome.key, "passed": outcome.passed})
        if outcome.beats(best):
            best = outcome
        return outcome

    try:
        failing = attempt(allocate(high), "highest", high)  # NothingToPrune here: not applicable
        if failing.passed:
            return best, trace
        low, top = 0.0, high
        for _ in range(steps):
            middle = round((low + top) / 2, 4)
            try:
                outcome = attempt(allocate(middle), "bisect", middle)
            except NothingToPrune as error:  # so low a level rounds to no unit: look higher
                trace.append({"step": "bisect", "level": middle, "nothing_to_prune": str(error)})
                low = middle
                continue
            if outcome.passed:
                low = middle
            else:
                top, failing = middle, outcome
        allocation = failing.allocation
        for _ in range(reverts):
            allocation = revert(allocation)
            if allocation is None or attempt(allocation, "revert", None).passed:
                break
    except BudgetSpent:
        pass
    return best, trace
