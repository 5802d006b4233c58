"""Per-unit importance of a channel group, and least-squares repair of its consumers.

Importance (higher keeps the unit):

* ``l1`` / ``l2``: norm of the producers' output slices of the unit;
* ``obs``: greedy structured Optimal Brain Surgeon on the consumers (``obs_select``), which
  needs the calibration Gram matrices;
* ``activation``: for every consumer, ‖X_c‖₂ · ‖W_c‖₂, the calibration activation norm of input
  channel c times the norm of the consumer weights it multiplies (an upper bound of the unit's
  contribution to the consumer's output), summed over consumers and over a unit's channels.

``repair_consumer`` solves, from the consumer input's Gram matrix, the ridge-regularised least
squares problem that best reproduces the consumer's original output (in the unpruned model, when
the statistics carry cross products with it) from the kept channels only, with an intercept
that folds the removed channels' mean into the consumer's bias when the consumer has one.
"""

from __future__ import annotations

import numpy as np

from onnxprune.activations import weight_matrix
from onnxprune.calibration import LayerStats
from onnxprune.ops import WeightLayout
from onnxprune.structured.groups import ChannelGroup

__all__ = ["IMPORTANCE", "obs_select", "repair_consumer", "unit_importance"]

IMPORTANCE = ("l1", "l2", "activation", "obs")


def _per_unit(values: np.ndarray, group: ChannelGroup) -> np.ndarray:
    return values.reshape(group.units, group.unit_size).sum(axis=1)


def _weight_norms(array: np.ndarray, axis: int, order: int) -> np.ndarray:
    rows = np.moveaxis(array.astype(np.float64), axis, 0).reshape(array.shape[axis], -1)
    return np.abs(rows).sum(axis=1) if order == 1 else (rows**2).sum(axis=1)


def unit_importance(
    group: ChannelGroup,
    arrays: dict[str, np.ndarray],
    method: str,
    stats: dict[str, LayerStats] | None = None,
) -> np.ndarray:
    """One score per unit of ``group``."""
    if method in ("l1", "l2"):
        order = 1 if method == "l1" else 2
        total = sum(
            group.unit_values(p, _weight_norms(arrays[p.tensor], p.axis, order))
            for p in group.producers
        )
        return _per_unit(total, group)
    total = np.zeros(group.units * group.unit_size)
    for consumer in group.consumers:
        layer = stats[consumer.tensor]
        array = arrays[consumer.tensor]
        channels = array.shape[consumer.axis]
        energy = layer.sum_sq.reshape(channels, -1).sum(axis=1)
        outgoing = _weight_norms(array, consumer.axis, 2)
        total += group.unit_values(consumer, np.sqrt(energy) * np.sqrt(outgoing))
    return _per_unit(total, group)


def repair_consumer(
    array: np.ndarray,
    layout: WeightLayout,
    stats: LayerStats,
    kept_channels: np.ndarray,
    with_bias: bool,
    ridge: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray | None]:
    """New consumer weight (removed input channels zeroed) and the bias change, if any."""
    matrix = weight_matrix(array.astype(np.float64), layout)  # [out, features]
    channels = array.shape[layout.in_axis]
    per_channel = matrix.shape[1] // channels
    keep = np.zeros(channels, dtype=bool)
    keep[kept_channels] = True
    features = np.repeat(keep, per_channel)
    gram, total, rows = stats.gram, stats.sum, max(stats.rows, 1)
    # Target: the consumer's output in the reference (original) model when one was captured.
    cross = stats.cross if stats.cross is not None else gram
    target_sum = stats.reference_sum if stats.reference_sum is not None else total
    kept = np.flatnonzero(features)
    lhs = gram[np.ix_(kept, kept)]
    rhs = cross[kept] @ matrix.T  # [kept, out]
    if with_bias:
        lhs = np.block([[lhs, total[kept, None]], [total[None, kept], np.array([[rows]])]])
        rhs = np.vstack([rhs, target_sum @ matrix.T])
    damping = ridge * np.mean(np.diag(lhs)) * np.eye(len(lhs))
    solution = np.linalg.solve(lhs + damping, rhs)
    new = np.zeros_like(matrix)
    new[:, kept] = solution[: len(kept)].T
    moved = np.moveaxis(np.empty(array.shape, dtype=bool), layout.out_axis, 0).shape
    result = np.moveaxis(new.reshape(moved), 0, layout.out_axis).astype(array.dtype)
    return result, (solution[-1].astype(array.dtype) if with_bias else None)


def _unit_features(group: ChannelGroup, unit: int, per_channel: int) -> np.ndarray:
    channels = group.indices(np.array([unit]))
    return (channels[:, None] * per_channel + np.arange(per_channel)[None, :]).ravel()


def obs_select(
    group: ChannelGroup,
    arrays: dict[str, np.ndarray],
    layouts: dict[str, WeightLayout],
    stats: dict[str, LayerStats],
    remove: int,
    ridge: float = 1e-3,
    steps: int = 32,
) -> np.ndarray:
    """Kept units after greedily removing ``remove`` units by structured Optimal Brain Surgeon.

    At each step the unit whose removal least increases the consumers' squared output error
    (after an optimal update of the remaining inputs) goes: for the unit's feature block B,
    cost = tr(W_B [H⁻¹_BB]⁻¹ W_Bᵀ) summed over consumers, with H = XᵀX + ridge; then W and H⁻¹
    are updated as if the unit's inputs were gone (as in ZipLM, Kurtic et al. 2023). Units of
    one feature are removed in about ``steps`` rounds of the cheapest ones, which measured as
    good as one at a time on MiniLM at a fraction of the time.
    """
    state = []
    for consumer in group.consumers:
        matrix = weight_matrix(arrays[consumer.tensor].astype(np.float64), layouts[consumer.tensor])
        gram = stats[consumer.tensor].gram
        hessian = gram.copy()  # damped on the diagonal, in place
        hessian[np.diag_indices(len(gram))] += ridge * np.mean(np.diag(gram))
        per_channel = matrix.shape[1] // (group.units * group.unit_size)
        state.append([matrix, np.linalg.inv(hessian), per_channel])
    single = group.unit_size == 1 and all(per_channel == 1 for _, _, per_channel in state)
    if single:
        return _obs_single(state, group.units, remove, steps)
    alive = list(range(group.units))
    while remove > 0:
        costs = np.array([_block_cost(state, group, unit) for unit in alive])
        chosen = alive[int(np.argmin(costs))]
        alive.remove(chosen)
        remove -= 1
        for entry in state:
            matrix, inverse, per_channel = entry
            block = _unit_features(group, chosen, per_channel)
            inner = np.linalg.inv(inverse[np.ix_(block, block)])
            matrix -= matrix[:, block] @ inner @ inverse[block, :]  # in place: no copies
            inverse -= inverse[:, block] @ inner @ inverse[block, :]
    return np.array(sorted(alive), dtype=np.int64)


def _obs_single(state: list, units: int, remove: int, steps: int) -> np.ndarray:
    """OBS for one feature per unit, the cheapest ``1/steps`` of what is left at a time.

    Removing a set R leaves ``H⁻¹ - C Cᵀ`` (the Schur complement), with C built a block at a
    time: for block B, ``C_B = H⁻¹[:, B] L⁻ᵀ`` where ``L Lᵀ = H⁻¹[B, B]`` (both as of now). So
    only C (features x removed), the diagonal and the alive columns of W are updated: work in
    proportion to what is removed, not one full ``in x in`` update per round.
    """
    alive = np.arange(units)
    rows = [np.ascontiguousarray(matrix.T) for matrix, _, _ in state]  # alive features of W
    factors = [np.empty((len(inverse), remove)) for _, inverse, _ in state]
    diagonals = [np.diag(inverse).copy() for _, inverse, _ in state]
    done = 0
    while remove > 0:
        take = max(1, min(remove, remove // steps))
        costs = sum(
            (weights**2).sum(axis=1) / diagonal[alive]
            for weights, diagonal in zip(rows, diagonals, strict=True)
        )
        order = np.argsort(costs, kind="stable")[:take]
        keep = np.ones(len(alive), dtype=bool)
        keep[order] = False
        chosen, alive = alive[order], alive[keep]
        for index, (_, inverse, _) in enumerate(state):
            factor, diagonal = factors[index], diagonals[index]
            columns = inverse[:, chosen] - factor[:, :done] @ factor[chosen, :done].T
            solve = np.linalg.inv(np.linalg.cholesky(columns[chosen])).T
            block = columns @ solve
            factor[:, done : done + take] = block
            diagonal -= (block**2).sum(axis=1)
            weights = rows[index]
            rows[index] = weights[keep] - block[alive] @ (solve.T @ weights[order])
        done += take
        remove -= take
    return np.sort(alive).astype(np.int64)


def _block_cost(state: list, group: ChannelGroup, unit: int) -> float:
    cost = 0.0
    for matrix, inverse, per_channel in state:
        block = _unit_features(group, unit, per_channel)
        inner = np.linalg.inv(inverse[np.ix_(block, block)])
        cost += float(np.einsum("ob,bc,oc->", matrix[:, block], inner, matrix[:, block]))
    return cost
