"""Noise-aware gates for the selection half: each accuracy drop as an upper confidence bound.

A drop measured on n samples is the mean of the paired per-sample differences
``d_i = correct_before_i - correct_after_i``. Its standard error is ``sqrt(var(d) / n)`` with
``var(d) = mean(d^2) - drop^2``. ``d_i`` is nonzero only where the two models predict
differently, so ``mean(d^2)`` is at most the share of samples where they disagree
(``1 - top1_agreement``), exactly that for a binary classifier with one label per sample;
the bound is therefore closed-form from numbers every verification already has, and never
narrower than the true one. The mean cosine to the original gets the lower bound
``cosine_mean - z * cosine_se`` (the standard error of the per-sample cosines' mean): without
it an embedding model's search chose a candidate at 0.9504 on the selection half that gave
0.9487 on the confirmation half under a 0.95 budget.

``bounded`` replaces the overall drop and every group's drop (groups of at least the minimum
size; smaller ones stay out of the gates) with ``drop + z * SE`` and recomputes each
attribute's worst group from the bounds; the gates are then judged on that. With ~55-row
groups a single flipped row is 1.8 pt: a candidate that passes a 2 pt gate on the point value
with one net flip has an SE of ~1.8 pt and fails the bound, which is what carries over.

The gates must hold on the confirmation half, not only for the true drop: the confirmation
value has its own noise, so the difference between the two halves' values has the standard
error ``SE * sqrt(1 + n_selection / n_confirmation)`` (``sqrt 2`` for equal halves).
``prediction_z`` scales ``z`` by that factor, so ``drop + z * SE`` bounds what the
confirmation half will measure. Without it (z 1 on the selection SE alone) Adult with repair
chose a candidate at 0.3 pt drop, bound 0.89 pt, that measured 1.1 pt on confirmation.
"""

from __future__ import annotations

import copy
import math

__all__ = ["bounded", "drop_bound", "paired_se", "prediction_z"]


def paired_se(drop: float, agreement: float, samples: int) -> float:
    """Standard error of a paired accuracy drop from its value, agreement and sample count."""
    if samples <= 0:
        return 0.0
    variance = max((1.0 - agreement) - drop * drop, 0.0)
    return math.sqrt(variance / samples)


def prediction_z(z: float, selection: int, confirmation: int) -> float:
    """``z`` for a bound on the confirmation half's value from the selection half's: ``z``
    times ``sqrt(1 + selection / confirmation)`` (the two halves' noise together)."""
    if z <= 0 or selection <= 0 or confirmation <= 0:
        return z
    return z * math.sqrt(1.0 + selection / confirmation)


def drop_bound(drop: float | None, agreement: float | None, samples: int, z: float):
    """``drop + z * SE`` (None stays None; no agreement: the point value)."""
    if drop is None or agreement is None:
        return drop
    return drop + z * paired_se(drop, agreement, samples)


def _bound_attribute(summary: dict, z: float) -> None:
    eligible = []
    for group in summary.get("groups", []):
        if group.get("accuracy_drop") is None:
            continue
        group["accuracy_drop_point"] = group["accuracy_drop"]
        group["accuracy_drop"] = drop_bound(
            group["accuracy_drop"], group.get("top1_agreement"), group["samples"], z
        )
        if not group.get("small"):
            eligible.append(group)
    if "worst_group_drop" in summary:
        worst = max(eligible, key=lambda g: g["accuracy_drop"], default=None)
        summary["worst_group"] = worst and worst["group"]
        summary["worst_group_drop"] = worst and worst["accuracy_drop"]


def bounded(verification: dict, z: float) -> dict:
    """A copy of ``verification`` whose accuracy drops are upper confidence bounds and whose
    mean cosine is a lower one (``cosine_mean - z * cosine_se``)."""
    if z <= 0:
        return verification
    result = dict(verification)
    quality = copy.deepcopy(verification["quality"])
    samples = verification.get("data", {}).get("samples", 0)
    quality["accuracy_drop"] = drop_bound(
        quality.get("accuracy_drop"), quality.get("top1_agreement"), samples, z
    )
    if quality.get("cosine_mean") is not None and quality.get("cosine_se") is not None:
        quality["cosine_mean_point"] = quality["cosine_mean"]
        quality["cosine_mean"] -= z * quality["cosine_se"]
    for summary in (quality.get("groups") or {}).values():
        _bound_attribute(summary, z)
    result["quality"] = quality
    return result
