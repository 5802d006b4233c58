"""Accuracy control: keep the layers with the largest measured error in float until the
budget holds, like NNCF's ``quantize_with_accuracy_control``.

Layers are ranked by their measured output error (``layer_errors`` of the first quantization;
static int8 measures it with the scales the model really uses). Each round reverts the next
layers of the ranking to float, re-quantizes and verifies; a round whose revert did not improve
the gate values is undone (the layers go back to quantized, and the report says so). Rounds stop
when the gates hold, the ranking is used up, or ``max_evaluations`` rounds have run; each round
reverts ``ceil(layers / max_evaluations)`` layers so the whole ranking fits in the budget.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

__all__ = ["gate_score", "revert_greedily"]

logger = logging.getLogger(__name__)

# quantize(excluded nodes) -> quantization section; evaluate() -> (passed, {gate: value}).
Quantize = Callable[[tuple[str, ...]], dict]
Evaluate = Callable[[], "tuple[bool, dict[str, float], float]"]


def gate_score(results: list[dict]) -> float:
    """Minus the total distance of failing gates from their limits (0 when all hold)."""
    score = 0.0
    for gate in results:
        if gate["passed"]:
            continue
        value = gate.get("value")
        if value is None or not math.isfinite(value):
            return -math.inf
        score -= abs(value - gate["limit"])
    return score


def revert_greedily(
    quantize: Quantize, evaluate: Evaluate, ranking: dict[str, float], max_evaluations: int
) -> tuple[dict, dict]:
    """Run rounds of revert-and-verify; return the last quantization section and the report.

    ``evaluate`` returns whether the gates hold, their values, and one score where higher is
    better (used to decide whether a revert helped).
    """
    ordered = sorted(ranking, key=lambda name: (-ranking[name], name))
    if not ordered:
        return quantize(()), {"needed": True, "satisfied": False, "evaluations": 0}
    step = max(1, math.ceil(len(ordered) / max_evaluations))
    kept: list[str] = []
    trial = kept
    _, _, best = evaluate()
    attempts, passed, section = [], False, {}
    for start in range(0, len(ordered), step):
        if len(attempts) >= max_evaluations:
            break
        trial = [*kept, *ordered[start : start + step]]
        section = quantize(tuple(trial))
        passed, gates, score = evaluate()
        helped = score > best or passed
        attempts.append(
            {
                "reverted": ordered[start : start + step],
                "float_layers": len(trial),
                "kept": helped,
                "passed": passed,
                "gates": gates,
            }
        )
        if helped:
            kept, best = trial, score
        if passed:
            break
    if not passed and kept != trial:
        section = quantize(tuple(kept))
    report = {
        "needed": True,
        "satisfied": passed,
        "evaluations": len(attempts),
        "float_layers": kept,
        "ranking": [{"node": n, "error": ranking[n]} for n in ordered],
        "attempts": attempts,
    }
    return section, report
