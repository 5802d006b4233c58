"""The report of ``compress --auto``: the chosen model verified on the confirmation half.

The chosen configuration is rebuilt into the output (the same configuration gives the same
bytes; a gradual schedule's chain is copied) and verified like ``compress``, with latency, on
the confirmation half the search never saw. The ``search`` section says what was searched,
how many candidates were evaluated (and how many came from the log of an earlier run), the
selection-vs-confirmation gap of every metric, the sensitivity curves and the trace.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from onnxprune.data import Dataset
from onnxprune.model_io import load_model, save_model
from onnxprune.report import build_report
from onnxprune.search.candidates import Evaluator, summary
from onnxprune.search.options import NO_CONFIGURATION, AutoOptions
from onnxprune.search.sensitivity import LayerCurve
from onnxprune.verify import Gates, evaluate_gates, verify_models

__all__ = ["search_report"]

logger = logging.getLogger(__name__)

GAP_METRICS = ("accuracy_drop", "top1_agreement", "cosine_mean", "worst_group_drop")


def _gap(selection: dict, confirmation: dict) -> dict:
    """Confirmation minus selection for every metric both halves have."""
    return {
        name: confirmation[name] - selection[name]
        for name in GAP_METRICS
        if selection.get(name) is not None and confirmation.get(name) is not None
    }


def _section(
    evaluator: Evaluator, options: AutoOptions, curves: dict, trace: list, seconds: float
) -> dict:
    budget = evaluator.budget
    return {
        "objective": options.objective,
        "schedule": options.schedule,
        "methods": list(evaluator.methods),
        "levels": list(options.levels),
        "seed": options.seed,
        "margin": options.margin,
        "tolerance": options.tolerance,
        "z": options.z,
        "z_applied": evaluator.z,
        "selection_gates": asdict(evaluator.gates),
        "split": {
            "selection": evaluator.selection.samples,
            "stratified_by": (["label"] if evaluator.selection.labels is not None else [])
            + [f"group.{name}" for name in sorted(evaluator.selection.groups)],
        },
        "candidates_evaluated": budget.evaluated,
        "candidates_from_log": budget.reused,
        "stopped": budget.stopped,
        "log": str(evaluator.log.path),
        "seconds": seconds,
        "curves": {
            method: [c.to_dict(options.levels) for c in layer_curves]
            for method, layer_curves in curves.items()
        },
        "trace": trace,
        **({"timing": evaluator.timing} if evaluator.timing else {}),
    }


def _write_chosen(evaluator: Evaluator, output: Path) -> dict:
    """Rebuild (or copy, for a gradual chain) the best candidate into ``output``; its sections
    (``pruning`` None for a gradual chain: the trace lists its steps)."""
    record = evaluator.best.record
    if "model_file" in record:
        save_model(load_model(record["model_file"]), output, external_data=False)
        return {"pruning": None}
    return evaluator.build(record["method"], evaluator.best.allocation, evaluator.source, output)


def search_report(
    model: Path,
    output: Path,
    evaluator: Evaluator,
    gates: Gates,
    confirmation: Dataset,
    options: AutoOptions,
    curves: dict[str, list[LayerCurve]],
    trace: list,
    seconds: float,
) -> dict:
    """Write the chosen model and return the report (``NO_CONFIGURATION`` when none held)."""
    section = _section(evaluator, options, curves, trace, seconds)
    best = evaluator.best
    if best is None:
        report = build_report("compress", model, None)
        report.update(passed=False, verdict=NO_CONFIGURATION)
        report["search"] = {**section, "verdict": NO_CONFIGURATION}
        return report
    sections = _write_chosen(evaluator, output)
    pruning = sections.pop("pruning")
    verification = verify_models(model, output, evaluator.verify_options, confirmation)
    verification["data"]["half"] = "confirmation"
    results = evaluate_gates(gates, verification)
    report = build_report(
        "compress", model, output, pruning=pruning, verification=verification, gates=results
    )
    report.update(sections)
    confirmed = summary(verification, results)
    chosen = best.record
    report["search"] = {
        **section,
        "confirmation": {"samples": confirmation.samples, **confirmed},
        "chosen": {k: chosen[k] for k in ("method", "sparsity", "objective", "allocation")},
        "selection": chosen["selection"],
        "gap": _gap(chosen["selection"], confirmed),
        "verdict": "gates hold on the confirmation half"
        if report["passed"]
        else "the chosen model breaks a gate on the confirmation half",
    }
    return report
