"""Verify a candidate model against its baseline with onnxruntime.

``verify_models`` runs both models on the same samples (a ``.npz`` dataset, or synthetic inputs
from the model's input spec, which the result says), and measures: accuracy against labels,
agreement with the baseline (top-1, cosine, max abs difference), per-group metrics, latency
(interleaved, with warm-up) and file sizes. ``evaluate_gates`` turns budgets into pass/fail.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from onnxprune.batching import DEFAULT_BATCH_SIZE, evaluation_batch
from onnxprune.comparison import OutputComparison, first_samples
from onnxprune.data import Dataset, index_bounds, input_specs, load_dataset, synthetic_dataset
from onnxprune.errors import InputError
from onnxprune.gates import (
    DEFAULT_BUDGET,
    GATE_TOLERANCE,
    Gates,
    default_gates,
    evaluate_gates,
    gate_result,
)
from onnxprune.groups import GroupOptions, crossed_attributes
from onnxprune.latency import measure_latency
from onnxprune.metrics import (
    check_labels,
    output_classes,
)
from onnxprune.normalize import InputShapes, load_normalized
from onnxprune.report import build_report
from onnxprune.runtime import create_session, fixed_batch, run_batches, run_dataset, tensor_outputs
from onnxprune.sizes import model_size
from onnxprune.tasks import Task, resolve_task
from onnxprune.verify_in_turn import (
    TOGETHER_BYTES,
    compare_with,
    described,
    files_bytes,
    files_of,
    outputs_of,
)

__all__ = [
    "BIG_SYNTHETIC_SAMPLES",
    "DEFAULT_BUDGET",
    "GATE_TOLERANCE",
    "SYNTHETIC_SAMPLES",
    "Gates",
    "GroupOptions",
    "VerifyOptions",
    "baseline_task",
    "default_gates",
    "evaluate_gates",
    "gate_result",
    "prepare_verification",
    "synthetic_samples_for",
    "verified_report",
    "verify_models",
]


SYNTHETIC_SAMPLES = 32
BIG_SYNTHETIC_SAMPLES = 4


@dataclass(frozen=True)
class VerifyOptions:
    """How to verify: data, which output is scored, batching, threads, latency runs and how
    groups are formed. ``batch_size`` None: ``batching.evaluation_batch`` chooses (64, or 1
    for a dynamically quantized model)."""

    data: str | os.PathLike | None = None
    output: str | None = None
    batch_size: int | None = None
    threads: int = 0
    latency_runs: int = 50
    latency_warmup: int = 5
    latency_batch: int = 1
    synthetic_samples: int | None = None  # None: ``synthetic_samples_for`` chooses
    data_samples: int | None = None  # verify on the first N samples of ``data`` (None: all)
    task: str | None = None
    input_shapes: InputShapes | None = None
    groups: GroupOptions = field(default_factory=GroupOptions)


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
    and the verification data, checked against each other before anything is written.

    The baseline's task (``baseline_task``, which runs its first batch) is found only when
    something depends on it (gates, labels) or the model is small."""
    gates = gates or Gates()
    options.groups.validate()
    dataset = prepare_dataset(model_path, options)
    crossed_attributes(options.groups.cross, list(dataset.groups))
    needs_task = gates.active or default_budget or dataset.labels is not None
    if not needs_task and files_bytes(model_path) > TOGETHER_BYTES:
        # Nothing to check the task against, and running a big model is costly: only the
        # scored output is checked here; verify_models finds the task on every sample.
        _scored_output(described(model_path, options.threads), options)
        return gates, dataset
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
        samples, why = synthetic_samples_for(model_path, options)
        dataset = synthetic_dataset(specs, samples, bounds=index_bounds(model))
        return replace(dataset, source=f"{dataset.source}, {why}") if why else dataset
    dataset = load_dataset(options.data, specs)
    if options.data_samples is None or options.data_samples >= dataset.samples:
        return dataset
    return first_samples(dataset, options.data_samples)


def synthetic_samples_for(model_path: str | os.PathLike, options: VerifyOptions) -> tuple:
    """How many synthetic samples to verify on, and why when it is not the usual default:
    ``options.synthetic_samples`` when given, else ``SYNTHETIC_SAMPLES``, or
    ``BIG_SYNTHETIC_SAMPLES`` for a model above ``TOGETHER_BYTES`` (run a slice at a time,
    each sample through all its weights twice: a check that the result runs and agrees,
    proportionate to the cost of the command)."""
    if options.synthetic_samples is not None:
        return options.synthetic_samples, ""
    if files_bytes(model_path) > TOGETHER_BYTES:
        return BIG_SYNTHETIC_SAMPLES, (
            f"{BIG_SYNTHETIC_SAMPLES} by default for a model over {TOGETHER_BYTES >> 20} MB "
            "(more with --samples, or give --data)"
        )
    return SYNTHETIC_SAMPLES, ""


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
    """The scored output's task, from the baseline's outputs on the first batch (the first
    sample of a model above ``TOGETHER_BYTES`` when no batch size is given); labels are checked
    against the output's classes (``metrics.check_labels``)."""
    batch = options.batch_size or DEFAULT_BATCH_SIZE
    if files_bytes(model_path) > TOGETHER_BYTES:  # a slice at a time, as in verify_models
        # One sample (or one batch of the given size): running a big model is costly. The
        # outputs are held, and verify_models does not run these samples again at that batch.
        batch = options.batch_size or 1
        session = described(model_path, options.threads)
        scored = _scored_output(session, options)
        first = outputs_of(model_path, session, dataset, batch, options.threads, limit=batch)
    else:
        session = create_session(model_path, options.threads)
        scored = _scored_output(session, options)
        first = run_dataset(session, dataset, batch, limit=batch)
    task = resolve_task(options.task, scored, first[scored], dataset.labels is not None)
    if task.classification:
        check_labels(dataset.labels, output_classes(first[scored]), scored)
    return task


def _batch_record(batch: int, reason: str, *sessions) -> dict:
    """The batch size every quality metric (accuracy, agreement, cosine, groups) was computed
    at, and why; a model with a fixed batch size runs at its own."""
    fixed = {fixed_batch(session) for session in sessions} - {None}
    if fixed:
        return {"quality": fixed.pop(), "reason": "the model's fixed batch size"}
    return {"quality": batch, "reason": reason}


def verify_models(
    baseline: str | os.PathLike,
    candidate: str | os.PathLike,
    options: VerifyOptions,
    dataset: Dataset | None = None,
) -> dict:
    """Compare ``candidate`` with ``baseline`` on the data; return the verification section.

    Models holding more than ``TOGETHER_BYTES`` together (files on disk) are run one after the
    other, each a slice of its weights at a time (``verify_in_turn``); their latency is then
    not measured.
    """
    dataset = dataset or prepare_dataset(baseline, options)
    in_turn = files_bytes(baseline) + files_bytes(candidate) > TOGETHER_BYTES
    open_session = described if in_turn else create_session
    base_session = open_session(baseline, options.threads)
    cand_session = open_session(candidate, options.threads)
    if not _compatible(base_session, cand_session):
        raise InputError(f"{candidate}: inputs or outputs differ from the baseline {baseline}")
    output_names = tensor_outputs(base_session)
    scored = _scored_output(base_session, options)
    batch, reason = evaluation_batch(
        options.batch_size, {"baseline": baseline, "candidate": candidate}
    )
    comparison = OutputComparison(output_names, scored, keep_scored=bool(dataset.groups))
    if in_turn:  # one model at a time, each a slice at a time
        base_outputs = outputs_of(baseline, base_session, dataset, batch, options.threads)
        compare_with(
            base_outputs, candidate, cand_session, dataset, batch, options.threads, comparison
        )
    else:
        pairs = zip(
            run_batches(base_session, dataset, batch),
            run_batches(cand_session, dataset, batch),
            strict=True,
        )
        for (_, base), (_, cand) in pairs:
            for name in output_names:
                comparison.add(name, base[name], cand[name])
    comparison.check()
    task = comparison.task(options.task, dataset.labels is not None)
    quality = comparison.quality(dataset, task, options.groups)
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
        "batch_size": _batch_record(batch, reason, base_session, cand_session),
        "quality": quality,
        "finite_outputs": comparison.finite(),
        "max_abs_diff_per_output": {name: comparison.max_abs_diff(name) for name in output_names},
        "size": {
            "baseline": model_size(files_of(baseline)),
            "candidate": model_size(files_of(candidate)),
        },
    }
    if options.latency_runs > 0 and in_turn:
        result["latency_skipped"] = (
            f"the two models hold more than {TOGETHER_BYTES >> 20} MB together: they were run "
            "one after the other, and latency is only measured interleaved"
        )
    elif options.latency_runs > 0:
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
        result["batch_size"]["latency"] = batch
    return result


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
