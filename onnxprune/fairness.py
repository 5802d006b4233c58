"""Per-group metrics of a baseline and a candidate classifier, before and after compression.

Per group (``group_metrics``): samples; with labels, positives and negatives, accuracy before and
after, its drop with a paired-bootstrap 95% interval, and for binary outputs (class 1 =
positive) selection rate (share predicted positive), TPR and FPR; for multi-class outputs the
same one-vs-rest per class (``per_class``: recall is the TPR); the expected calibration error
when the outputs carry probabilities (``onnxprune.metrics.calibration_error``); top-1 agreement
between the two models.

Per attribute, over the groups of at least ``min_group_size`` samples only (smaller groups are
reported, marked ``small`` and named in a note): the accuracy gap (best minus worst group), the
worst group's drop, the demographic-parity difference (largest minus smallest selection rate)
and the equalized-odds difference (the larger of the TPR and FPR differences, as fairlearn's
``equalized_odds_difference``), before and after; multi-class outputs take the largest
one-vs-rest difference over the classes. A TPR (FPR) resting on fewer than
``min_group_positives`` positives (negatives) is left out of the equalized-odds difference
and named in ``rates_note`` (``fairness_rates``). A value no eligible group defines is None.
"""

from __future__ import annotations

import zlib

import numpy as np

from onnxprune.fairness_rates import DEFAULT_MIN_POSITIVES, parity, rate_exclusions, rates_note
from onnxprune.groups import GroupColumn, GroupOptions, group_columns
from onnxprune.metrics import calibration_error, output_classes, predictions, probabilities

__all__ = ["CONFIDENCE", "fairness_metrics", "group_metrics", "paired_bootstrap"]

CONFIDENCE = 0.95
SIDES = ("before", "after")


def paired_bootstrap(
    correct_before: np.ndarray, correct_after: np.ndarray, resamples: int, seed: int, key: str
) -> list[float] | None:
    """95% percentile interval of the accuracy drop (before minus after) over ``resamples``
    paired resamples of the samples (both models always see the same resample).

    Resampling n samples with replacement only changes how often each distinct per-sample
    difference occurs, so the counts are drawn from a multinomial (the same distribution, in
    O(resamples x distinct values)). The generator is seeded by ``seed`` and ``key`` (the
    group), so an interval does not depend on which other groups exist."""
    if resamples <= 0 or not len(correct_before):
        return None
    values, counts = np.unique(correct_before - correct_after, return_counts=True)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    draws = rng.multinomial(len(correct_before), counts / counts.sum(), size=resamples)
    means = draws @ values / len(correct_before)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def _rate(hits: np.ndarray, where: np.ndarray) -> float | None:
    return float(np.mean(hits[where])) if where.any() else None


def _one_vs_rest(pred: np.ndarray, labels: np.ndarray | None, positive: int) -> dict:
    rates = {"selection_rate": float(np.mean(pred == positive)) if pred.size else None}
    if labels is not None:
        hits = pred == positive
        rates.update(tpr=_rate(hits, labels == positive), fpr=_rate(hits, labels != positive))
    return rates


def _side(pred, probs, labels, binary: bool) -> dict:
    """One model's metrics on one group's rows (flattened over positions)."""
    side = {}
    if labels is not None:
        side["accuracy"] = float(np.mean(pred == labels)) if pred.size else None
    if binary:
        side.update(_one_vs_rest(pred, labels, 1))
    if probs is not None and labels is not None:
        side["ece"] = calibration_error(probs, labels)
    return side


def _per_class(rows: np.ndarray, labels, preds: dict, classes: list[int]) -> list[dict]:
    truth = labels[rows].reshape(-1)
    table = []
    for positive in classes:
        entry: dict = {
            "class": positive,
            "support": int(np.sum(truth == positive)),
            "negatives": int(np.sum(truth != positive)),
        }
        for when, pred in preds.items():
            rates = _one_vs_rest(pred[rows].reshape(-1), truth, positive)
            entry.update({f"{name}_{when}": value for name, value in rates.items()})
        table.append(entry)
    return table


def _correct(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per sample: the share of its positions predicted right (0 or 1 for one label)."""
    return (pred == labels).reshape(len(labels), -1).mean(axis=1)


class _Scored:
    """Both models' predictions (and probabilities, when the outputs carry them), with the
    labels, computed once for every attribute."""

    def __init__(self, labels, baseline, candidate, classes: int | None) -> None:
        self.labels = labels
        self.preds = {"before": predictions(baseline), "after": predictions(candidate)}
        self.probs = {"before": probabilities(baseline), "after": probabilities(candidate)}
        if classes is None:
            classes = output_classes(baseline)
        seen = np.unique(np.concatenate([p.reshape(-1) for p in self.preds.values()]))
        if labels is not None:
            seen = np.union1d(seen, np.unique(labels))
        self.classes = list(range(classes)) if classes else [int(v) for v in seen]
        self.binary = classes == 2 or (classes is None and set(self.classes) <= {0, 1})

    def side(self, when: str, rows: np.ndarray) -> dict:
        probs = self.probs[when]
        truth = None if self.labels is None else self.labels[rows].reshape(-1)
        return _side(
            self.preds[when][rows].reshape(-1),
            None if probs is None else probs[rows],
            truth,
            self.binary,
        )


def _group_entry(scored: _Scored, name: str, rows: np.ndarray, options: GroupOptions, key: str):
    samples = int(rows.sum())
    before, after = scored.preds["before"][rows], scored.preds["after"][rows]
    entry: dict = {
        "group": name,
        "samples": samples,
        "small": samples < options.min_group_size,
        "top1_agreement": float(np.mean(before == after)),
    }
    labels = scored.labels
    if labels is not None and scored.binary:
        truth = labels[rows]
        entry.update(positives=int(np.sum(truth == 1)), negatives=int(np.sum(truth != 1)))
    sides = {when: scored.side(when, rows) for when in SIDES}
    for metric in sides["before"]:
        entry.update({f"{metric}_{when}": sides[when][metric] for when in SIDES})
        if metric == "accuracy":
            entry["accuracy_drop"] = sides["before"][metric] - sides["after"][metric]
            low_high = paired_bootstrap(
                _correct(before, labels[rows]),
                _correct(after, labels[rows]),
                options.bootstrap,
                options.seed,
                key,
            )
            entry["accuracy_drop_ci95"] = low_high
            entry["drop_ci_excludes_zero"] = (
                None if low_high is None else not (low_high[0] <= 0 <= low_high[1])
            )
    if labels is not None and not scored.binary:
        entry["per_class"] = _per_class(rows, labels, scored.preds, scored.classes)
    return entry


def _spread(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if known else None


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _small_note(groups: list[dict], minimum: int) -> str:
    listed = ", ".join(f"{g['group']} (n={g['samples']})" for g in groups)
    return (
        f"{len(groups)} group(s) with fewer than {minimum} samples are shown but left out of the "
        f"gaps, the worst group and the gates: {listed}"
    )


def _summary(entries: list[dict], binary: bool, options: GroupOptions) -> dict:
    minimum = options.min_group_size
    eligible = [g for g in entries if not g["small"]]
    small = [g for g in entries if g["small"]]
    summary: dict = {"groups": entries, "min_group_size": minimum}
    summary["small_groups"] = [g["group"] for g in small]
    if small:
        summary["note"] = _small_note(small, minimum)
    positives = options.min_group_positives
    left_out = rate_exclusions(eligible, binary, positives)
    summary.update(min_group_positives=positives, rates_left_out=left_out)
    if left_out:
        summary["rates_note"] = rates_note(left_out, positives)
    lowest = min(eligible, key=lambda g: g["top1_agreement"], default=None)
    summary["lowest_agreement_group"] = lowest and lowest["group"]
    summary["lowest_group_agreement"] = lowest and lowest["top1_agreement"]
    if entries and "accuracy_before" in entries[0]:
        worst = max(eligible, key=lambda g: g["accuracy_drop"], default=None)
        summary.update(
            accuracy_gap_before=_spread([g["accuracy_before"] for g in eligible]),
            accuracy_gap_after=_spread([g["accuracy_after"] for g in eligible]),
            worst_group=worst and worst["group"],
            worst_group_drop=worst and worst["accuracy_drop"],
        )
    parities = {when: parity(eligible, binary, when, positives) for when in SIDES}
    for index, name in enumerate(("demographic_parity", "equalized_odds")):
        if name == "equalized_odds" and (not entries or "accuracy_before" not in entries[0]):
            continue  # needs labels
        before, after = parities["before"][index], parities["after"][index]
        summary.update(
            {
                f"{name}_difference_before": before,
                f"{name}_difference_after": after,
                f"{name}_increase": _difference(after, before),
            }
        )
    return summary


def _attribute(scored: _Scored, attribute: str, column: GroupColumn, options: GroupOptions):
    entries = [
        _group_entry(scored, name, column.rows(index), options, f"{attribute}={name}")
        for index, name in enumerate(column.names)
    ]
    return _summary(entries, scored.binary, options)


def fairness_metrics(
    groups: dict[str, np.ndarray],
    labels: np.ndarray | None,
    baseline: np.ndarray,
    candidate: np.ndarray,
    options: GroupOptions | None = None,
    classes: int | None = None,
) -> dict[str, dict]:
    """Per-group metrics for every attribute in ``groups`` and every intersection in
    ``options.cross``, keyed by attribute (``race``, ``race&sex``).

    Args:
        groups: attribute -> one value per sample (strings, bytes or integers).
        labels: class ids (shaped like the predictions), or None (agreement and selection
            rates only).
        baseline, candidate: each model's scored output (logits, probabilities, a score) or
            its predicted class ids; probabilities give the calibration error.
        options: minimum group size, intersections, bootstrap resamples and seed.
        classes: the output's class count (default: read from ``baseline``).
    """
    options = options or GroupOptions()
    options.validate()
    scored = _Scored(labels, baseline, candidate, classes)
    columns = group_columns(groups, options.cross)
    return {name: _attribute(scored, name, column, options) for name, column in columns.items()}


def group_metrics(
    column: np.ndarray,
    labels: np.ndarray | None,
    baseline: np.ndarray,
    candidate: np.ndarray,
    *,
    min_group_size: int = 30,
    classes: int | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    attribute: str = "group",
    min_group_positives: int = DEFAULT_MIN_POSITIVES,
) -> dict:
    """``fairness_metrics`` for one attribute: its per-group table and summary."""
    options = GroupOptions(
        min_group_size=min_group_size,
        bootstrap=bootstrap,
        seed=seed,
        min_group_positives=min_group_positives,
    )
    groups = {attribute: column}
    return fairness_metrics(groups, labels, baseline, candidate, options, classes)[attribute]
