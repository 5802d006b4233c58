"""Verify a candidate model against its baseline with onnxruntime.

``verify_models`` runs both models on the same samples (a ``.npz`` dataset, or synthetic inputs
from the model's input spec, which the result says), and measures: accuracy against labels,
agreement with the baseline (top-1, cosine, max abs difference), per-group metrics, latency
(interleaved, with warm-up) and file sizes. ``evaluate_gates`` turns budgets into pass/fail.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from onnxprune.data import Dataset, index_bounds, input_specs, load_dataset, synthetic_dataset
from onnxprune.errors import InputError
from onnxprune.latency import measure_latency
from onnxprune.metrics import accuracy, agreement_metrics, group_metrics, predictions
from onnxprune.model_io import model_files
from onnxprune.normalize import InputShapes, load_normalized
from onnxprune.report import build_report
from onnxprune.runtime import create_session, fixed_batch, run_dataset, tensor_outputs
from onnxprune.sizes import model_size
from onnxprune.tasks import Task, resolve_task

# compress's budget when the user sets none: agreement (classifiers) or cosine >= this.
DEFAULT_BUDGET = 0.95
# A measured value within this of its limit counts as at the limit (passes).
GATE_TOLERANCE = 1e-9

__all__ = [
    "DEFAULT_BUDGET",
    "Gates",
    "VerifyOptions",
    "baseline_task",
    "default_gates",
    "evaluate_gates",
    "gate_result",
    "prepare_verification",
    "verified_report",
    "verify_models",
]


@dataclass(frozen=True)
class VerifyOptions:
    """How to verify: data, which output is scored, batching, threads and latency runs."""

    data: str | os.PathLike | None = None
    output: str | None = None
    batch_size: int = 64
    threads: int = 0
    latency_runs: int = 50
    latency_warmup: int = 5
    latency_batch: int = 1
    synthetic_samples: int = 32
    task: str | None = None
    input_shapes: InputShapes | None = None


@dataclass(frozen=True)
class Gates:
    """Budgets; None means the gate is off. Drops and agreements are fractions (0.01 = 1 pt)."""

    max_accuracy_drop: float | None = None
    max_group_drop: float | None = None
    min_agreement: float | None = None
    min_cosine: float | None = None

    default: bool = False  # True when compress chose this budget (no gate was given)

    @property
    def active(self) -> bool:
        limits = (self.max_accuracy_drop, self.max_group_drop, self.min_agreement, self.min_cosine)
        return any(value is not None for value in limits)

    def check_applicable(self, dataset: Dataset, task: Task) -> None:
        """Refuse gates that this dataset or task cannot evaluate, before any work is done."""
        if self.max_accuracy_drop is not None and dataset.labels is None:
            raise InputError("--max-accuracy-drop needs a 'label' array in the data")
        if self.max_group_drop is not None and (dataset.labels is None or not dataset.groups):
            raise InputError("--max-group-drop needs 'label' and 'group.<attribute>' arrays")
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


def _compatible(baseline, candidate) -> bool:
    """Same input and output names, types and ranks, and no dim static on both sides with two
    different sizes (symbolic dims may be renamed, and shape inference may make a dynamic
    output dim static)."""

    def dims(shape) -> tuple:
        return tuple(d if isinstance(d, int) else None for d in shape or ())

    for base_args, cand_args in (
        (baseline.get_inputs(), candidate.get_inputs()),
        (baseline.get_outputs(), candidate.get_outputs()),
    ):
        if [(a.name, a.type) for a in base_args] != [(a.name, a.type) for a in cand_args]:
            return False
        for base, cand in zip(base_args, cand_args, strict=True):
            one, two = dims(base.shape), dims(cand.shape)
            if len(one) != len(two):
                return False
            pairs = zip(one, two, strict=True)
            if any(a is not None and b is not None and a != b for a, b in pairs):
                return False
    return True


def prepare_verification(
    model_path: str | os.PathLike,
    options: VerifyOptions,
    gates: Gates | None,
    default_budget: bool = False,
) -> tuple[Gates, Dataset]:
    """The gates (all off when None; with ``default_budget`` and no gate, ``default_gates``)
    and the verification data, checked against each other before anything is written."""
    gates = gates or Gates()
    dataset = prepare_dataset(model_path, options)
    task = baseline_task(model_path, options, dataset)
    if default_budget and not gates.active:
        gates = default_gates(task)
    gates.check_applicable(dataset, task)
    return gates, dataset


def prepare_dataset(model_path: str | os.PathLike, options: VerifyOptions) -> Dataset:
    """Load the verification data for the model at ``model_path`` (or make synthetic inputs)."""
    model = load_normalized(model_path, options.input_shapes, infer_shapes=False)
    specs = input_specs(model)
    if options.data is None:
        return synthetic_dataset(specs, options.synthetic_samples, bounds=index_bounds(model))
    return load_dataset(options.data, specs)


def _scored_output(session, options: VerifyOptions) -> str:
    output_names = [o.name for o in session.get_outputs()]
    tensors = tensor_outputs(session)
    scored = options.output or (tensors[0] if tensors else output_names[0])
    if scored not in output_names:
        raise InputError(f"no model output named '{scored}' (outputs: {', '.join(output_names)})")
    if scored not in tensors:
        raise InputError(
            f"output '{scored}' is a sequence or map, not a tensor: it cannot be compared per "
            "sample (name a tensor output with --score-output)"
        )
    return scored


def baseline_task(model_path: str | os.PathLike, options: VerifyOptions, dataset: Dataset) -> Task:
    """The scored output's task, from the baseline's outputs on the first batch."""
    session = create_session(model_path, options.threads)
    scored = _scored_output(session, options)
    first = run_dataset(session, dataset, options.batch_size, limit=options.batch_size)
    return resolve_task(options.task, scored, first[scored], dataset.labels is not None)


def _quality(base_out: np.ndarray, cand_out: np.ndarray, dataset: Dataset, task: Task) -> dict:
    quality = agreement_metrics(base_out, cand_out, classification=task.classification)
    if not task.classification:
        quality["groups"] = {}
        return quality
    base_pred, cand_pred = predictions(base_out), predictions(cand_out)
    if dataset.labels is not None:
        if dataset.labels.shape != base_pred.shape:
            raise InputError(
                f"'label' has shape {dataset.labels.shape}, but the scored output gives "
                f"predictions of shape {base_pred.shape}"
            )
        before, after = accuracy(base_pred, dataset.labels), accuracy(cand_pred, dataset.labels)
        quality.update(accuracy_before=before, accuracy_after=after, accuracy_drop=before - after)
    quality["groups"] = {
        attribute: group_metrics(column, dataset.labels, base_pred, cand_pred)
        for attribute, column in sorted(dataset.groups.items())
    }
    return quality


def _finite(output: np.ndarray) -> bool:
    return bool(output.dtype.kind not in "fc" or np.isfinite(output).all())


def _max_abs_diff(baseline: np.ndarray, candidate: np.ndarray) -> float:
    if not baseline.size:
        return 0.0  # an empty output: nothing differs
    return float(np.max(np.abs(baseline.astype(np.float64) - candidate)))


def verify_models(
    baseline: str | os.PathLike,
    candidate: str | os.PathLike,
    options: VerifyOptions,
    dataset: Dataset | None = None,
) -> dict:
    """Compare ``candidate`` with ``baseline`` on the data; return the verification section."""
    dataset = dataset or prepare_dataset(baseline, options)
    base_session = create_session(baseline, options.threads)
    cand_session = create_session(candidate, options.threads)
    if not _compatible(base_session, cand_session):
        raise InputError(f"{candidate}: inputs or outputs differ from the baseline {baseline}")
    output_names = tensor_outputs(base_session)
    scored = _scored_output(base_session, options)
    base_outputs = run_dataset(base_session, dataset, options.batch_size)
    cand_outputs = run_dataset(cand_session, dataset, options.batch_size)
    task = resolve_task(options.task, scored, base_outputs[scored], dataset.labels is not None)
    result: dict = {
        "data": {
            "source": dataset.source,
            "synthetic": dataset.synthetic,
            "samples": dataset.samples,
            "labels": dataset.labels is not None,
            "group_attributes": sorted(dataset.groups),
        },
        "scored_output": scored,
        "task": task.to_dict(),
        "quality": _quality(base_outputs[scored], cand_outputs[scored], dataset, task),
        "finite_outputs": {
            "baseline": _finite(base_outputs[scored]),
            "candidate": _finite(cand_outputs[scored]),
        },
        "max_abs_diff_per_output": {
            name: _max_abs_diff(base_outputs[name], cand_outputs[name]) for name in output_names
        },
        "size": {
            "baseline": model_size(model_files(baseline)),
            "candidate": model_size(model_files(candidate)),
        },
    }
    if options.latency_runs > 0:
        batch = fixed_batch(base_session) or options.latency_batch
        latency = measure_latency(
            base_session,
            cand_session,
            dataset.slice(0, batch),
            runs=options.latency_runs,
            warmup=options.latency_warmup,
        )
        latency.update(batch=batch, intra_op_threads=options.threads, cpu_count=os.cpu_count())
        result["latency"] = latency
    return result


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


def evaluate_gates(gates: Gates, verification: dict) -> list[dict]:
    """One entry per active gate: its limit, the measured value and whether it held.

    A value equal to the limit passes (compared with a tolerance of ``GATE_TOLERANCE``); a
    gate whose value could not be measured (not finite, or not defined for the task) fails.
    A candidate whose scored output is not finite where the baseline's is fails a
    ``finite_outputs`` gate that is always on.
    """
    quality = verification["quality"]
    results = []

    def add(name: str, limit: float | None, value: float | None, higher_is_better: bool) -> None:
        if limit is None:
            return
        entry = gate_result(name, limit, value, higher_is_better)
        if gates.default:
            entry["default"] = True
        results.append(entry)

    add("max_accuracy_drop", gates.max_accuracy_drop, quality.get("accuracy_drop"), False)
    worst = max(
        (g["worst_group_drop"] for g in quality["groups"].values() if "worst_group_drop" in g),
        default=None,
    )
    add("max_group_drop", gates.max_group_drop, worst, False)
    add("min_agreement", gates.min_agreement, quality.get("top1_agreement"), True)
    add("min_cosine", gates.min_cosine, quality["cosine_mean"], True)
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


def verified_report(
    command: str,
    model: str | os.PathLike,
    output: str | os.PathLike,
    verify_options: VerifyOptions,
    dataset: Dataset,
    gates: Gates,
    **sections: dict,
) -> dict:
    """Verify ``output`` against ``model`` and build the command's report with its gates."""
    verification = verify_models(model, output, verify_options, dataset)
    gate_results = evaluate_gates(gates, verification)
    report = build_report(command, model, output, verification=verification, gates=gate_results)
    report.update(sections)
    return report
