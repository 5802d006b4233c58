"""``compress``: clean up, prune, quantize and verify in one pipeline with one report.

Stages run in order on files in a temporary folder beside the output: graph clean-up
(``CleanupPass``, on by default), pruning (unstructured or structured), then optional
quantization. The final model is verified against the original; every intermediate stage is
verified too, so the report shows what each stage cost and gained. Data, options and gates are
checked before anything is written; the output is written even when a gate fails.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from onnxprune.api import prune_file
from onnxprune.calibration import CalibrationOptions
from onnxprune.cleanup import CleanupPass
from onnxprune.data import Dataset, input_specs, load_dataset
from onnxprune.errors import InputError
from onnxprune.model_io import (
    check_distinct_output,
    load_model,
    model_files,
    save_model,
    uses_external_data,
)
from onnxprune.normalize import load_normalized
from onnxprune.optimize import optimize_stage
from onnxprune.pruning import PruneOptions
from onnxprune.quant.accuracy import gate_score, revert_greedily
from onnxprune.quantize import QuantizeOptions, quantize_model_file
from onnxprune.repair.options import RepairOptions
from onnxprune.repair.stage import checked_stage_options, run_repair_stage
from onnxprune.report import build_report
from onnxprune.sensitivity import quantization_sensitivity
from onnxprune.structured.pipeline import StructuredOptions
from onnxprune.verify import (
    Gates,
    VerifyOptions,
    evaluate_gates,
    prepare_verification,
    verified_report,
    verify_models,
)

__all__ = ["cleanup_file", "compress_file", "quantize_file"]

logger = logging.getLogger(__name__)


def cleanup_file(model: str | os.PathLike, output: str | os.PathLike) -> dict:
    """Run ``CleanupPass`` on ``model`` into ``output``; return the nodes removed per op."""
    working = load_normalized(model)
    external = uses_external_data(working)
    protected = model_files(model, working)  # before the clean-up replaces tensors
    cleanup = CleanupPass()
    cleanup(working)
    save_model(working, output, protected=protected, external_data=external)
    section = {"nodes_removed": cleanup.counts, "total_removed": sum(cleanup.counts.values())}
    if cleanup.skipped:
        section["skipped_steps"] = cleanup.skipped
    return section


def _stage(name: str, verification: dict) -> dict:
    quality, latency = verification["quality"], verification.get("latency", {})
    return {
        "stage": name,
        "bytes": verification["size"]["candidate"]["bytes"],
        "compressed_bytes": verification["size"]["candidate"]["compressed_bytes"],
        "accuracy": quality.get("accuracy_after"),
        "top1_agreement": quality.get("top1_agreement"),
        "cosine_mean": quality["cosine_mean"],
        "max_abs_diff": quality["max_abs_diff"],
        "batch_size": verification["batch_size"]["quality"],
        "speedup": latency.get("speedup"),
        "speedup_conclusive": latency.get("conclusive"),
    }


def _warn_if_same(calibration: str | None, data: str | os.PathLike | None) -> None:
    if calibration and data and Path(calibration).resolve() == Path(data).resolve():
        logger.warning(
            "warning: --calibration and --data are the same file; the verification is not "
            "on held-out samples"
        )


def _check_auto_exclude(auto_exclude: bool, quantize: QuantizeOptions | None, gates: Gates):
    if not auto_exclude:
        return
    if quantize is None:
        raise InputError("--auto-exclude goes with quantization")
    if quantize.calibration is None:
        raise InputError("--auto-exclude ranks layers on calibration data: give --calibration")
    if not gates.active:
        raise InputError("--auto-exclude needs a budget (--max-accuracy-drop, --min-cosine, ...)")


def _calibration(model: str | os.PathLike, path: str | None) -> Dataset | None:
    return None if path is None else load_dataset(path, input_specs(load_model(model)))


def _quantize_within_budget(
    original: str | os.PathLike,
    source: Path,
    output: Path,
    quantize: QuantizeOptions,
    verify_options: VerifyOptions,
    dataset: Dataset,
    gates: Gates,
    auto_exclude: bool,
    protected: tuple[Path, ...],
) -> dict:
    """Quantize ``source``; with ``auto_exclude``, keep the layers with the largest measured
    error in float until the gates hold (``onnxprune.quant.accuracy``)."""
    calibration = _calibration(source, quantize.calibration)
    section = quantize_model_file(source, output, quantize, calibration, protected=protected)
    if not auto_exclude:
        return section
    quick = replace(verify_options, latency_runs=0)
    verification = verify_models(original, output, quick, dataset)
    if all(g["passed"] for g in evaluate_gates(gates, verification)):
        section["auto_exclude"] = {"needed": False}
        return section
    ranking = section.get("layer_errors") or quantization_sensitivity(
        load_model(source), calibration
    )

    def requantize(excluded: tuple[str, ...]) -> dict:
        return quantize_model_file(source, output, quantize, calibration, excluded, protected)

    def evaluate() -> tuple[bool, dict, float]:
        results = evaluate_gates(gates, verify_models(original, output, quick, dataset))
        return (
            all(g["passed"] for g in results),
            {g["gate"]: g["value"] for g in results},
            gate_score(results),
        )

    section, control = revert_greedily(requantize, evaluate, ranking, quantize.max_evaluations)
    section["auto_exclude"] = control
    if not control["satisfied"]:
        logger.warning(
            "warning: --auto-exclude: the budget does not hold after %d evaluations",
            control["evaluations"],
        )
    return section


def compress_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    prune_options: PruneOptions | StructuredOptions,
    verify_options: VerifyOptions,
    gates: Gates | None = None,
    calibration_options: CalibrationOptions | None = None,
    decisions: dict[str, list[int]] | None = None,
    quantize: QuantizeOptions | None = None,
    cleanup: bool = True,
    auto_exclude: bool = False,
    default_budget: bool = True,
    optimize: bool = False,
    repair: RepairOptions | None = None,
) -> dict:
    """Clean up, prune, optionally repair (``onnxprune.repair``), optimise for onnxruntime
    (``onnxprune.optimize``) and quantize ``model`` into ``output``; verify every stage.

    Without any gate and with ``default_budget``, the budget is ``verify.default_gates``
    (agreement or cosine >= 0.95 on the scored output), so a broken model never passes."""
    if isinstance(prune_options, PruneOptions):
        prune_options.validate()
    else:
        prune_options.validate(prune_options.calibration is not None)
    if quantize is not None:
        quantize.validate()
    repair = checked_stage_options(repair, prune_options.calibration)
    gates, dataset = prepare_verification(model, verify_options, gates, default_budget)
    _check_auto_exclude(auto_exclude, quantize, gates)
    _warn_if_same(prune_options.calibration, verify_options.data)
    output = Path(output)
    if not output.parent.is_dir():
        raise InputError(f"{output}: output folder {output.parent} does not exist")
    source = load_model(model)
    protected = tuple(model_files(model, source))
    check_distinct_output(output, protected, uses_external_data(source))
    stages, sections = [], {}
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.stages-", dir=output.parent) as work:
        current = Path(model)
        if cleanup:
            cleaned = Path(work) / "cleaned.onnx"
            sections["cleanup"] = cleanup_file(current, cleaned)
            stages.append(("cleanup", cleaned))
            current = cleaned
        pruned = Path(work) / "pruned.onnx" if quantize or optimize or repair else output
        pruning = prune_file(current, pruned, prune_options, calibration_options, decisions)
        last = "prune"
        if repair is not None:  # on the plain graph, before fusion and quantization
            stages.append(("prune", pruned))
            repaired = Path(work) / "repaired.onnx" if quantize or optimize else output
            sections["repair"] = run_repair_stage(pruned, current, repaired, repair)
            pruned, last = repaired, "repair"
        if optimize:
            stages.append((last, pruned))
            fused = Path(work) / "optimized.onnx" if quantize else output
            args = (model, pruned, fused, Path(work), verify_options, dataset)
            sections["optimization"] = optimize_stage(*args)
            pruned, last = fused, "optimize"
        if quantize:
            stages.append((last, pruned))
            sections["quantization"] = _quantize_within_budget(
                model,
                pruned,
                output,
                quantize,
                verify_options,
                dataset,
                gates,
                auto_exclude,
                protected,
            )
        verification = verify_models(model, output, verify_options, dataset)
        summaries = [
            _stage(name, verify_models(model, path, verify_options, dataset))
            for name, path in stages
        ]
    final = "quantize" if quantize else last
    report = build_report(
        "compress",
        model,
        output,
        pruning=pruning["pruning"],
        verification=verification,
        gates=evaluate_gates(gates, verification),
    )
    report.update(sections)
    report["stages"] = [*summaries, _stage(final, verification)]
    return report


def quantize_file(
    model: str | os.PathLike,
    output: str | os.PathLike,
    options: QuantizeOptions,
    verify_options: VerifyOptions,
    gates: Gates | None = None,
    auto_exclude: bool = False,
) -> dict:
    """Quantize ``model`` into ``output`` and verify the result; return the report."""
    options.validate()
    gates, dataset = prepare_verification(model, verify_options, gates)
    _check_auto_exclude(auto_exclude, options, gates)
    _warn_if_same(options.calibration, verify_options.data)
    section = _quantize_within_budget(
        model,
        Path(model),
        Path(output),
        options,
        verify_options,
        dataset,
        gates,
        auto_exclude,
        (Path(model),),
    )
    return verified_report(
        "quantize", model, output, verify_options, dataset, gates, quantization=section
    )
