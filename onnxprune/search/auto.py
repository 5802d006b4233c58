"""``compress --auto``: the most compressed model whose gates hold, chosen honestly.

1. The evaluation data is split (seeded, stratified by label and groups) into a selection half
   and a confirmation half (``split``); the search sees only the selection half.
2. Cheap first: per-layer sensitivity curves on calibration data (``sensitivity``), and for
   any global level a knapsack allocation over them (``allocate``).
3. Per method: verified bisection on the global level, then greedy reverting of the most
   sensitive layers (``bisect``); or, with ``schedule="gradual"``, sparsity raised step by step
   (repairing in between when repair options are given) until a step breaks a gate.
4. Exact last: with ``--objective latency`` the best few passing candidates are timed and
   the fastest chosen (``choose.choose_fastest``); the best candidate is rebuilt into the
   output and verified, with latency, on the confirmation half; that verification is the
   report's and the gates'.

Every candidate is logged (``log``) and the best so far kept; the same seed gives the same
model. No passing candidate: the verdict is ``NO_CONFIGURATION`` and no model is written.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from onnxprune.api import file_sha256
from onnxprune.calibration import CalibrationOptions
from onnxprune.compress import cleanup_file
from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.errors import InputError, NothingToPrune
from onnxprune.macs import count_macs
from onnxprune.model_io import (
    check_distinct_output,
    load_model,
    model_files,
    uses_external_data,
)
from onnxprune.normalize import load_normalized
from onnxprune.pruning import PruneOptions
from onnxprune.repair.options import RepairOptions
from onnxprune.repair.stage import checked_stage_options
from onnxprune.search.allocate import allocate_levels
from onnxprune.search.bisect import Budget, BudgetSpent, revert_most_sensitive, verified_bisection
from onnxprune.search.bound import prediction_z
from onnxprune.search.build import STRUCTURED, split_method
from onnxprune.search.candidates import Evaluator, tightened
from onnxprune.search.choose import choose_fairest, choose_fastest, variants
from onnxprune.search.log import SearchLog
from onnxprune.search.options import GRADUAL_STEPS, AutoOptions
from onnxprune.search.report import search_report
from onnxprune.search.sensitivity import LayerCurve, sparsity_curves
from onnxprune.search.split import stratified_split, subset
from onnxprune.verify import Gates, VerifyOptions, prepare_verification

__all__ = ["auto_compress"]

STRUCTURED_HIGH = 0.75  # the highest structured sparsity tried (then bisected down)

logger = logging.getLogger(__name__)


def _header(
    model: Path, options: AutoOptions, prune: PruneOptions, verify: VerifyOptions, gates: Gates
) -> dict:
    """What a resumed log must agree on: inputs (by hash), options and gates."""
    data = verify.data
    return {
        "model_sha256": file_sha256(model),
        "data_sha256": file_sha256(data) if data else None,
        "calibration_sha256": file_sha256(prune.calibration) if prune.calibration else None,
        "auto": {
            k: v
            for k, v in asdict(options).items()
            if k not in ("log", "resume", "max_evals", "max_time")
        },
        "prune": {k: v for k, v in asdict(prune).items() if k != "calibration"},
        "gates": asdict(gates),
        "output": verify.output,
    }


def _check_supported(model: Path, options: AutoOptions, methods: tuple[str, ...]) -> None:
    if uses_external_data(load_model(model)):
        raise InputError("--auto does not handle models with external data yet")
    structured = [m for m in methods if split_method(m)[2] is not None]
    if structured and options.schedule == "gradual":
        raise InputError(
            f"--schedule gradual raises unstructured sparsity; not with {structured[0]}"
        )
    quantized = [m for m in methods if split_method(m)[1] != "float"]
    if quantized and options.schedule == "gradual":
        raise InputError(f"--schedule gradual prunes each step's model again; not {quantized[0]}")


def _curve_data(calibration: Dataset | None, selection: Dataset, samples: int) -> Dataset:
    """Calibration samples for the curves (the selection half's inputs without calibration)."""
    data = calibration if calibration is not None else selection
    count = min(samples, data.samples)
    return subset(data, list(range(count)), data.source)


def _search_method(
    evaluator: Evaluator, method: str, curves: list[LayerCurve] | None, options: AutoOptions
) -> list[dict]:
    """One method's oneshot or gradual search; the trace of what it tried. ``curves`` None:
    a structured method (one sparsity, bisected; nothing to revert per layer)."""
    levels = options.levels
    if curves is None:

        def allocate(level: float) -> dict[str, float]:
            return {STRUCTURED: round(level, 4)}

        def revert(allocation: dict[str, float]) -> dict[str, float] | None:
            return None

        high = STRUCTURED_HIGH
    else:

        def allocate(level: float) -> dict[str, float]:
            return allocate_levels(curves, levels, level, options.objective)

        def revert(allocation: dict[str, float]) -> dict[str, float] | None:
            return revert_most_sensitive(curves, levels, allocation)

        high = levels[-1]
    if options.schedule == "gradual":
        return _gradual(evaluator, method, allocate)
    if split_method(method)[1] != "float":  # the precision alone first: cheap, often enough
        try:
            alone = evaluator.evaluate(method, {k: 0.0 for k in allocate(0.0)})
        except BudgetSpent:
            return []
        first = {
            "step": "precision alone",
            "level": 0.0,
            "method": method,
            "key": alone.key,
            "passed": alone.passed,
        }
        if not alone.passed:
            return [first]
    else:
        first = None
    _, trace = verified_bisection(
        lambda allocation: evaluator.evaluate(method, allocation),
        allocate,
        revert,
        high,
        options.steps,
        options.reverts,
    )
    return ([first] if first else []) + [{**entry, "method": method} for entry in trace]


def _gradual(evaluator: Evaluator, method: str, allocate) -> list[dict]:
    """Raise the global level step by step from the last step's (repaired) model."""
    trace, source = [], evaluator.source
    try:
        for index, level in enumerate(GRADUAL_STEPS):
            allocation = allocate(level)
            fresh = evaluator.budget.evaluated
            outcome = evaluator.evaluate(method, allocation, source)
            trace.append(
                {
                    "step": "gradual",
                    "level": level,
                    "method": method,
                    "key": outcome.key,
                    "passed": outcome.passed,
                }
            )
            if not outcome.passed:
                break
            step_file = evaluator.work / f"gradual-{method}-{index}.onnx"
            if evaluator.budget.evaluated > fresh:  # just built: keep it
                shutil.copyfile(evaluator.work / "candidate.onnx", step_file)
            else:  # from the log of an earlier run: rebuild it (deterministic)
                evaluator.build(method, allocation, source, step_file)
            outcome.record["model_file"] = str(step_file)
            source = step_file
    except BudgetSpent:
        pass
    return trace


def _run_search(
    evaluator: Evaluator,
    options: AutoOptions,
    methods: tuple[str, ...],
    cleaned: Path,
    curve_data: Dataset,
    verify: VerifyOptions,
) -> tuple[dict, list]:
    model = load_normalized(cleaned)
    total = count_macs(model)["total"]
    evaluator.other_macs = total
    curves_by_method: dict[str, list[LayerCurve]] = {}
    evaluator.methods = methods
    trace: list[dict] = []
    for method in methods:
        base, _, target = split_method(method)
        if target is None and base not in curves_by_method:
            curves_by_method[base] = sparsity_curves(
                model,
                replace(evaluator.prune_options, method=base),
                options.levels,
                curve_data,
                evaluator.calibration_options,
                verify.output,
            )
            if not evaluator.macs:
                evaluator.macs = {c.name: c.macs for c in curves_by_method[base]}
                evaluator.other_macs = total - sum(evaluator.macs.values())
        try:
            trace += _search_method(evaluator, method, curves_by_method.get(base), options)
        except NothingToPrune as error:  # e.g. structured:heads on a model without attention
            logger.info("method %s skipped: %s", method, error)
            trace.append({"step": "skipped", "method": method, "reason": str(error)})
    return curves_by_method, trace


def auto_compress(
    model: str | os.PathLike,
    output: str | os.PathLike,
    prune_options: PruneOptions,
    options: AutoOptions,
    verify_options: VerifyOptions,
    gates: Gates | None = None,
    calibration_options: CalibrationOptions | None = None,
    repair: RepairOptions | None = None,
) -> dict:
    """Search for the best configuration whose gates hold; write it to ``output``; report."""
    started = time.monotonic()
    model, output = Path(model), Path(output)
    has_calibration = prune_options.calibration is not None
    options.validate(has_calibration)
    repair = checked_stage_options(repair, prune_options.calibration)
    gates, dataset = prepare_verification(model, verify_options, gates, default_budget=True)
    if dataset.synthetic:
        raise InputError("--auto needs --data: the search selects and confirms on real samples")
    if not output.parent.is_dir():
        raise InputError(f"{output}: output folder {output.parent} does not exist")
    check_distinct_output(output, tuple(model_files(model, load_model(model))), False)
    selection, confirmation = stratified_split(dataset, options.seed)
    budget = Budget(options.max_evals, options.max_time)
    z = prediction_z(options.z, selection.samples, confirmation.samples)
    header = {**_header(model, options, prune_options, verify_options, gates), "z_applied": z}
    log = SearchLog(options.log, header, options.resume)
    methods = options.searched_methods(has_calibration)
    _check_supported(model, options, methods)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.auto-", dir=output.parent) as work:
        cleaned = Path(work) / "cleaned.onnx"
        cleanup_file(model, cleaned)
        calibration = None
        if has_calibration:
            specs = input_specs(load_model(cleaned))
            calibration = load_dataset(prune_options.calibration, specs)
        evaluator = Evaluator(
            model,
            cleaned,
            Path(work),
            selection,
            tightened(gates, options.margin),
            verify_options,
            prune_options,
            calibration_options or CalibrationOptions(),
            options.objective,
            {},
            0,
            log,
            budget,
            repair,
            z=z,
        )
        curve_data = _curve_data(calibration, selection, options.curve_samples)
        curves, trace = _run_search(
            evaluator, options, methods, cleaned, curve_data, verify_options
        )
        if options.schedule == "oneshot":
            trace += variants(evaluator, methods, curves)
            evaluator.best = choose_fairest(evaluator, options.tolerance)
            if options.objective == "latency":
                evaluator.timing = choose_fastest(evaluator, options.timed)
        return search_report(
            model,
            output,
            evaluator,
            gates,
            confirmation,
            options,
            curves,
            trace,
            time.monotonic() - started,
        )
