"""The last step of the search: variants at the chosen sparsity, then the fairest near-best.

The bisection maximises the objective; many configurations are nearly as good. Choosing among
a few variants on the selection half by their worst-group drop is what lowers it on data the
search never saw. So, for every unstructured method searched, the uniform allocation at the
best candidate's achieved sparsity is verified too; then every passing candidate whose
objective is within ``tolerance`` (a fraction) of the best competes on the selection half's
worst-group drop, then accuracy drop, then objective, each as its upper confidence bound
(``bound``) when ``--search-z`` is on: a drop that rests on fewer flipped rows wins.
"""

from __future__ import annotations

from onnxprune.search.bisect import BudgetSpent, Outcome
from onnxprune.search.build import STRUCTURED, split_method
from onnxprune.search.candidates import Evaluator
from onnxprune.search.sensitivity import LayerCurve

__all__ = ["choose_fairest", "variants"]


def variants(
    evaluator: Evaluator, methods: tuple[str, ...], curves: dict[str, list[LayerCurve]]
) -> list[dict]:
    """Verify each unstructured method's uniform allocation at the best's sparsity."""
    best, trace = evaluator.best, []
    if best is None or STRUCTURED in best.allocation:
        return trace
    level = round(best.record["sparsity"], 4)
    if level <= 0:
        return trace
    for method in methods:
        base, _, target = split_method(method)
        if target is not None or base not in curves:
            continue
        allocation = {curve.name: level for curve in curves[base]}
        try:
            outcome = evaluator.evaluate(method, allocation)
        except BudgetSpent:
            break
        trace.append(
            {
                "step": "variant",
                "level": level,
                "method": method,
                "key": outcome.key,
                "passed": outcome.passed,
            }
        )
    return trace


def _fairness(outcome: Outcome) -> tuple[float, float, float]:
    selection = outcome.record.get("bound") or outcome.record["selection"]
    worst = selection.get("worst_group_drop")
    drop = selection.get("accuracy_drop")
    return (
        worst if worst is not None else 0.0,
        drop if drop is not None else 0.0,
        outcome.objective,
    )


def choose_fairest(evaluator: Evaluator, tolerance: float) -> Outcome | None:
    """Among passing candidates within ``tolerance`` of the best objective, the one with the
    lowest worst-group drop (then accuracy drop, then objective) on the selection half, each
    as its upper confidence bound when the search uses one (``bound``)."""
    best = evaluator.best
    if best is None:
        return None
    limit = best.objective * (1.0 + tolerance)
    near = [o for o in evaluator.seen.values() if o.passed and o.objective <= limit]
    return min(near, key=_fairness)
