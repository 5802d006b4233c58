"""The last step of the search: variants at the chosen sparsity, then the fairest near-best.

The bisection maximises the objective; many configurations are nearly as good. Choosing among
a few variants on the selection half by their worst-group drop is what lowers it on data the
search never saw. So, for every unstructured method searched, the uniform allocation at the
best candidate's achieved sparsity is verified too; then every passing candidate whose
objective is within ``tolerance`` (a fraction) of the best competes on the selection half's
worst-group drop, then accuracy drop, then objective, each as its upper confidence bound
(``bound``) when ``--search-z`` is on: a drop that rests on fewer flipped rows wins.
With ``--objective latency`` the MAC proxy only shortlists: ``choose_fastest`` times the
shortlist and the precision alone, and chooses by measured time (``timing``).
"""

from __future__ import annotations

from pathlib import Path

from onnxprune.runtime import create_session, fixed_batch
from onnxprune.search.bisect import BudgetSpent, Outcome
from onnxprune.search.build import STRUCTURED, split_method
from onnxprune.search.candidates import Evaluator
from onnxprune.search.sensitivity import LayerCurve
from onnxprune.search.timing import BLOCKS, MARGIN, ROUNDS, pick_fastest, summarise, time_models

__all__ = ["choose_fairest", "choose_fastest", "variants"]


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


def _model_file(evaluator: Evaluator, outcome: Outcome, index: int) -> Path:
    """The candidate's model: kept when it was verified, else rebuilt (deterministic)."""
    if outcome.key in evaluator.kept:
        return evaluator.kept[outcome.key]
    if "model_file" in outcome.record:
        return Path(outcome.record["model_file"])
    path = evaluator.work / f"timed-{index}.onnx"
    evaluator.build(outcome.record["method"], outcome.allocation, evaluator.source, path)
    return path


def choose_fastest(evaluator: Evaluator, timed: int) -> dict | None:
    """Time the ``timed`` passing candidates with the fewest proxy MACs and every precision
    alone (``timing``), make the fastest the best; the report's ``timing`` section (None when
    fewer than two candidates pass or ``timed`` is 0)."""
    passing = sorted(
        (o for o in evaluator.seen.values() if o.passed), key=lambda o: (o.objective, o.key)
    )
    alone = [o for o in passing if not any(o.allocation.values())]
    shortlist = {o.key: o for o in [*passing[:timed], *alone]} if timed else {}
    if len(shortlist) < 2:
        return None
    order = sorted(shortlist, key=lambda k: (shortlist[k].objective, k))
    files = {key: _model_file(evaluator, shortlist[key], i) for i, key in enumerate(order)}
    threads = evaluator.verify_options.threads
    batch = fixed_batch(create_session(evaluator.baseline, threads))
    feed = evaluator.selection.slice(0, batch or evaluator.verify_options.latency_batch)
    times = time_models(files, feed, threads)
    chosen, comparisons = pick_fastest(order, times)
    evaluator.best = shortlist[chosen]

    def describe(key: str) -> dict:
        record = shortlist[key].record
        return {k: record[k] for k in ("method", "sparsity", "objective")}

    reference = alone[0].key if alone else order[0]
    for item in comparisons:
        item["incumbent"], item["challenger"] = (
            describe(item["incumbent"]),
            describe(item["challenger"]),
        )
    return {
        "rounds": ROUNDS,
        "blocks": BLOCKS,
        "margin": MARGIN,
        "clock": "cpu_ms (this thread's CPU time; wall time reported beside it)",
        "batch": int(next(iter(feed.values())).shape[0]),
        "threads": threads,
        "reference": describe(reference),
        "candidates": summarise(times, reference, describe),
        "comparisons": comparisons,
        "chosen": describe(chosen),
    }
