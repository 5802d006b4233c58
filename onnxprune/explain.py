"""Explanation drift: does the compressed model still decide for the same reasons?

For N evaluation samples (drawn with a seed), occlusion attributions (``occlusion``) are computed
for the baseline and the candidate with onnxruntime only: unit ``j``'s attribution is
``s(x) - s(x with unit j hidden)``, all hidden copies of a sample run as one batch. The score
``s`` is the baseline's predicted class's output for a classifier (the same class for both
models), a single-score output itself, and otherwise the output's projection on the baseline's
output direction for that sample. A model whose results depend on the batch (dynamic int8
quantization computes activation scales per batch) runs its copies one at a time instead.

Per sample, the two attributions are compared (``attribution.compare``): top-k overlap,
Spearman rank correlation, sign agreement. ``agreement`` is the mean top-k overlap, the value
``--min-explanation-agreement`` gates. Global drift compares the mean |attribution| of every
unit; with group columns in the data, the per-sample metrics are also summarised per group.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.attribution import aggregate, compare, global_drift, group_drift, top_k
from onnxprune.batching import evaluation_batch
from onnxprune.data import Dataset, input_specs
from onnxprune.errors import InputError
from onnxprune.groups import group_columns
from onnxprune.normalize import load_normalized
from onnxprune.occlusion import Occluder, make_occluder
from onnxprune.runtime import create_session, fixed_batch
from onnxprune.verify import VerifyOptions, gate_result, prepare_dataset

__all__ = [
    "ExplainOptions",
    "Scorer",
    "add_explanation",
    "attribute",
    "check_explainable",
    "explain_models",
    "explain_report",
]

logger = logging.getLogger(__name__)

# Ops whose results for one sample depend on the rest of the batch.
BATCH_DEPENDENT_OPS = frozenset({"DynamicQuantizeLinear"})


@dataclass(frozen=True)
class ExplainOptions:
    """How many samples to explain (drawn with ``seed``), top-k, image patch side, gate."""

    samples: int
    top_k: int = 5
    seed: int = 0
    patch: int | None = None
    min_agreement: float | None = None
    worst: int = 5

    def validate(self) -> None:
        if self.samples < 1:
            raise InputError(f"--explain {self.samples}: needs at least 1 sample")
        if self.top_k < 1:
            raise InputError(f"--explain-top-k {self.top_k}: must be at least 1")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise InputError(f"--min-explanation-agreement {self.min_agreement}: must be in [0, 1]")


class Scorer:
    """Runs one model on a batch of occluded copies; ``outputs`` gives the scored output's rows
    (flattened per row, float64). Batch-dependent models run one row at a time."""

    def __init__(self, path: str | os.PathLike, output: str, threads: int, batch: int) -> None:
        self.session: ort.InferenceSession = create_session(path, threads)
        ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
        self.batched = not ops & BATCH_DEPENDENT_OPS
        self.fixed = fixed_batch(self.session)
        self.batch = self.fixed or (batch if self.batched else 1)
        self.output = output
        _check_score_output(self.session, output)

    def outputs(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(feed.values())))
        padded = -rows % self.fixed if self.fixed else 0
        if padded:
            feed = {
                k: np.concatenate([v, np.repeat(v[:1], padded, axis=0)]) for k, v in feed.items()
            }
        pieces = []
        for start in range(0, rows + padded, self.batch):
            chunk = {k: v[start : start + self.batch] for k, v in feed.items()}
            pieces.append(np.asarray(self.session.run([self.output], chunk)[0]))
        out = np.concatenate(pieces)[:rows]
        return out.reshape(rows, -1).astype(np.float64)


def _target(row: np.ndarray, classification: bool) -> tuple[str, np.ndarray | int]:
    """What is explained for one sample, from the baseline's output ``row`` on it."""
    if row.size == 1:
        return "the output score", 0
    if classification:
        return "the output of the baseline's predicted class", int(np.argmax(row))
    norm = float(np.linalg.norm(row))
    return "the output's projection on the baseline's output", row / norm if norm else row


def _scores(outputs: np.ndarray, target: np.ndarray | int) -> np.ndarray:
    return outputs[:, target] if isinstance(target, int) else outputs @ target


def _attributions(
    occluder: Occluder, scorers: tuple[Scorer, Scorer], feed: dict, classification: bool
) -> tuple[str, np.ndarray, np.ndarray]:
    units = occluder.present(feed)
    batch = occluder.copies(feed, units)
    base_out = scorers[0].outputs(batch)
    what, target = _target(base_out[0], classification)
    result = []
    for outputs in (base_out, scorers[1].outputs(batch)):
        scores = _scores(outputs, target)
        attribution = np.full(occluder.units, np.nan)
        attribution[units] = scores[0] - scores[1:]
        result.append(attribution)
    return what, result[0], result[1]


def attribute(
    scorers: tuple[Scorer, Scorer],
    occluder: Occluder,
    dataset: Dataset,
    indices: list[int],
    classification: bool,
) -> tuple[str, np.ndarray, np.ndarray]:
    """What is explained, and both models' attributions ``[samples, units]`` of the samples at
    ``indices`` (NaN where a unit was not occluded: padding tokens)."""
    what, before, after = "", [], []
    for index in indices:
        feed = dataset.slice(index, index + 1)
        what, a, b = _attributions(occluder, scorers, feed, classification)
        before.append(a)
        after.append(b)
    return what, np.stack(before), np.stack(after)


def _chosen(dataset: Dataset, count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    picked = rng.choice(dataset.samples, size=min(count, dataset.samples), replace=False)
    return sorted(int(i) for i in picked)


def _check_score_output(session: ort.InferenceSession, output: str | None) -> None:
    """Occlusion needs a float score: refuse class ids and other integer outputs."""
    outputs = {o.name: o.type for o in session.get_outputs() if o.type.startswith("tensor(")}
    name = output or next(iter(outputs), None)
    kind = outputs.get(name, "no tensor")
    if "float" not in kind and "double" not in kind:
        raise InputError(
            f"--explain needs a float score output; '{name}' is {kind} (name a score or logit "
            "output with --score-output)"
        )


def check_explainable(
    model: str | os.PathLike, verify_options: VerifyOptions, options: ExplainOptions
) -> None:
    """Refuse, before any work, options or a model/data that cannot be explained."""
    options.validate()
    dataset = prepare_dataset(model, verify_options)
    specs = input_specs(load_normalized(model, verify_options.input_shapes, infer_shapes=False))
    make_occluder(specs, dataset, options.patch)
    _check_score_output(create_session(model, verify_options.threads), verify_options.output)


def _per_sample(
    indices: list[int], before: np.ndarray, after: np.ndarray, k: int, dataset: Dataset
) -> list[dict]:
    """Each sample's drift metrics, with its group names as the fairness report writes them."""
    columns = group_columns(dataset.groups) if dataset.groups else {}
    rows = []
    for row, index in enumerate(indices):
        entry = {"index": index, **compare(before[row], after[row], k)}
        if columns:
            entry["groups"] = {a: c.names[c.codes[index]] for a, c in columns.items()}
        rows.append(entry)
    return rows


def _group_order(dataset: Dataset) -> dict[str, list[str]]:
    """Group names per attribute in report order (numbers numerically, then text)."""
    if not dataset.groups:
        return {}
    return {a: c.names for a, c in group_columns(dataset.groups).items()}


def _worst(rows: list[dict], before: np.ndarray, after: np.ndarray, options) -> list[dict]:
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["top_k_overlap"], rows[i]["spearman"]))
    worst = []
    for i in order[: options.worst]:
        a, b = np.nan_to_num(before[i]), np.nan_to_num(after[i])
        entry = {k: v for k, v in rows[i].items() if k != "groups"}
        worst.append(
            {
                **entry,
                "top_units_before": top_k(a, options.top_k),
                "top_units_after": top_k(b, options.top_k),
            }
        )
    return worst


def explain_models(
    baseline: str | os.PathLike,
    candidate: str | os.PathLike,
    output: str,
    classification: bool,
    verify_options: VerifyOptions,
    options: ExplainOptions,
    dataset: Dataset | None = None,
) -> dict:
    """Occlusion attributions of ``options.samples`` samples on both models, compared.

    Args:
        output: the scored output (the verification's ``scored_output``).
        classification: whether it is a classifier's (explain the predicted class).
    """
    options.validate()
    dataset = dataset or prepare_dataset(baseline, verify_options)
    specs = input_specs(load_normalized(baseline, verify_options.input_shapes, infer_shapes=False))
    occluder = make_occluder(specs, dataset, options.patch)
    models = {"baseline": baseline, "candidate": candidate}
    batch = evaluation_batch(verify_options.batch_size, models)[0]
    scorers = tuple(Scorer(p, output, verify_options.threads, batch) for p in models.values())
    indices = _chosen(dataset, options.samples, options.seed)
    start = time.perf_counter()
    what, before, after = attribute(scorers, occluder, dataset, indices, classification)
    seconds = time.perf_counter() - start
    rows = _per_sample(indices, before, after, options.top_k, dataset)
    section = {
        "method": "occlusion",
        **occluder.describe(),
        "target": what,
        "samples": len(indices),
        "seed": options.seed,
        "top_k": options.top_k,
        "batched": {"baseline": scorers[0].batched, "candidate": scorers[1].batched},
        "aggregate": aggregate(rows),
        "global": global_drift(before, after, options.top_k, occluder.grid),
        "groups": group_drift(rows, _group_order(dataset)),
        "worst": _worst(rows, before, after, options),
        "per_sample": rows,
        "seconds": seconds,
        "seconds_per_sample": seconds / len(indices),
    }
    logger.info("explained %d samples in %.2f s", len(indices), seconds)
    return section


def add_explanation(report: dict, section: dict, options: ExplainOptions) -> dict:
    """Attach the explanation section; with ``min_agreement``, add its gate and the verdict."""
    report["explanation"] = section
    if options.min_agreement is not None:
        value = section["aggregate"]["agreement"]
        report["gates"].append(
            gate_result("min_explanation_agreement", options.min_agreement, value, True)
        )
        report["passed"] = all(gate["passed"] for gate in report["gates"])
    return report


def explain_report(
    report: dict,
    baseline: str | os.PathLike,
    candidate: str | os.PathLike,
    verify_options: VerifyOptions,
    options: ExplainOptions,
) -> dict:
    """Explain the report's verified models on its scored output; attach the section and gate."""
    verification = report["verification"]
    classification = (verification.get("task") or {}).get("task") == "classification"
    section = explain_models(
        baseline, candidate, verification["scored_output"], classification, verify_options, options
    )
    return add_explanation(report, section, options)
