"""How far two attributions of the same sample agree: top-k overlap, rank correlation, signs;
and summaries over samples (``aggregate``), units (``global_drift``) and groups (``group_drift``).

Attributions are 1-D arrays over the same units (features, patches, tokens); units that were
not occluded for a sample (padding tokens) are NaN and left out of every comparison.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "aggregate",
    "compare",
    "global_drift",
    "group_drift",
    "ranks",
    "sign_agreement",
    "spearman",
    "top_k",
    "top_k_overlap",
]

# Attributions smaller than this fraction of the largest are treated as zero for their sign.
SIGN_TOLERANCE = 1e-6


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0 (smallest), tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    positions = np.empty(len(values))
    positions[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=positions) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; 1 for equal vectors, 0 when either is constant otherwise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if np.array_equal(a, b):
        return 1.0
    ra, rb = ranks(a) - (len(a) - 1) / 2, ranks(b) - (len(b) - 1) / 2
    norm = float(np.sqrt(np.sum(ra * ra) * np.sum(rb * rb)))
    return float(np.sum(ra * rb) / norm) if norm > 0 else 0.0


def top_k(values: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` largest ``|values|`` (ties: the lower index first)."""
    order = np.argsort(-np.abs(np.asarray(values, dtype=np.float64)), kind="stable")
    return [int(i) for i in order[: min(k, len(order))]]


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """The fraction of ``a``'s top-k units (by magnitude) that are also ``b``'s."""
    k = min(k, len(a))
    if k == 0:
        return 1.0
    return len(set(top_k(a, k)) & set(top_k(b, k))) / k


def sign_agreement(a: np.ndarray, b: np.ndarray, k: int | None = None) -> float:
    """The fraction of units whose attributions have the same sign: over the union of both
    top-k units when ``k`` is given (the units that matter; tiny attributions flip sign on
    rounding noise), else over every unit. Values within ``SIGN_TOLERANCE`` of the largest
    count as zero; 1 when no unit is left to compare."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if k is not None:
        chosen = sorted(set(top_k(a, k)) | set(top_k(b, k)))
        a, b = a[chosen], b[chosen]
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(b), initial=0.0)))
    tolerance = SIGN_TOLERANCE * scale
    sa = np.where(np.abs(a) > tolerance, np.sign(a), 0.0)
    sb = np.where(np.abs(b) > tolerance, np.sign(b), 0.0)
    considered = (sa != 0) | (sb != 0)
    return float(np.mean(sa[considered] == sb[considered])) if considered.any() else 1.0


def compare(a: np.ndarray, b: np.ndarray, k: int) -> dict:
    """Top-k overlap, Spearman correlation (all units) and sign agreement (top-k units) over the
    units both attribute."""
    present = np.isfinite(a) & np.isfinite(b)
    a, b = a[present], b[present]
    return {
        "top_k_overlap": top_k_overlap(a, b, k),
        "spearman": spearman(a, b),
        "sign_agreement": sign_agreement(a, b, k),
    }


def aggregate(rows: list[dict]) -> dict:
    overlap = [r["top_k_overlap"] for r in rows]
    return {
        "agreement": float(np.mean(overlap)),
        "top_k_overlap_min": float(np.min(overlap)),
        "spearman_mean": float(np.mean([r["spearman"] for r in rows])),
        "spearman_min": float(np.min([r["spearman"] for r in rows])),
        "sign_agreement_mean": float(np.mean([r["sign_agreement"] for r in rows])),
    }


def _mean_abs(attributions: np.ndarray) -> np.ndarray:
    present = np.isfinite(attributions)
    sums = np.where(present, np.abs(attributions), 0.0).sum(axis=0)
    return sums / np.maximum(present.sum(axis=0), 1)


def global_drift(
    before: np.ndarray, after: np.ndarray, k: int, grid: tuple[int, int] | None = None
) -> dict:
    """Mean |attribution| per unit of each model (``grid``: image patches, rows x cols), its
    ranking (1 = most important) and how far it moved."""
    seen = np.flatnonzero(np.isfinite(before).any(axis=0))
    mean_before, mean_after = _mean_abs(before)[seen], _mean_abs(after)[seen]
    rank_before = np.empty(len(seen), dtype=int)
    rank_before[np.argsort(-mean_before, kind="stable")] = np.arange(1, len(seen) + 1)
    rank_after = np.empty(len(seen), dtype=int)
    rank_after[np.argsort(-mean_after, kind="stable")] = np.arange(1, len(seen) + 1)
    units = []
    for i, unit in enumerate(seen):
        entry = {"unit": int(unit)}
        if grid:
            entry.update(zip(("row", "col"), divmod(int(unit), grid[1]), strict=True))
        entry.update(
            mean_abs_before=float(mean_before[i]),
            mean_abs_after=float(mean_after[i]),
            rank_before=int(rank_before[i]),
            rank_after=int(rank_after[i]),
        )
        units.append(entry)
    return {
        "spearman": spearman(mean_before, mean_after),
        "top_k_overlap": top_k_overlap(mean_before, mean_after, k),
        "units": units,
    }


def group_drift(rows: list[dict], order: dict[str, list[str]] | None = None) -> dict:
    """Per group attribute: the per-sample metrics averaged per group, and the worst group.

    Groups come in ``order`` (each attribute's names in report order) where given, else sorted
    as text; groups with no explained sample are left out.
    """
    result = {}
    for attribute in rows[0].get("groups", {}):
        present = {r["groups"][attribute] for r in rows}
        names = (order or {}).get(attribute) or sorted(present)
        groups = []
        for value in [n for n in names if n in present]:
            members = [r for r in rows if r["groups"][attribute] == value]
            groups.append({"group": value, "samples": len(members), **aggregate(members)})
        worst = min(groups, key=lambda g: g["agreement"])
        agreements = [g["agreement"] for g in groups]
        result[attribute] = {
            "groups": groups,
            "worst_group": worst["group"],
            "agreement_gap": max(agreements) - min(agreements),
        }
    return result
