"""``--objective latency``, exact last: the best few feasible candidates timed, fastest chosen.

The search ranks candidates by a MAC proxy (deterministic), but fewer MACs do not always make
onnxruntime faster (a few FFN units less save little; kernels have their own costs). So the
``timed`` passing candidates with the fewest proxy MACs, plus each precision's "precision
alone" candidate (int8 alone: the usual best fixed configuration), are timed in one process:
one session each (the verification's threads), warm-up, then ``ROUNDS`` rounds in which every
model runs once, the order rotating each round. Both clocks are kept: wall time and this
thread's CPU time (steadier on a shared machine; with one intra-op thread onnxruntime computes
on the calling thread). The rounds are cut into ``BLOCKS`` consecutive blocks; a ratio between
two models is the ratio of their medians per block, and its spread the blocks' p25-p75.

Choice (deterministic given the times): candidates are taken in proxy order (fewest MACs
first); a later one replaces the current choice only when its CPU-time ratio against it has
a p25 above 1 + ``MARGIN`` (faster in at least three blocks of four, beyond the noise), else
the one with fewer MACs stays.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from onnxprune.latency import interleaved_times
from onnxprune.runtime import create_session

__all__ = [
    "BLOCKS",
    "MARGIN",
    "ROUNDS",
    "block_ratios",
    "pick_fastest",
    "summarise",
    "time_models",
]

ROUNDS = 160
WARMUP = 5
BLOCKS = 8
MARGIN = 0.01  # a ratio whose p25 is within 1% of 1 is not called faster


def time_models(
    models: dict[str, Path], feed: dict, threads: int, rounds: int = ROUNDS
) -> dict[str, dict[str, list[float]]]:
    """Per model, its ``wall_ms`` and ``cpu_ms`` per round, interleaved (rotating order)."""
    sessions = {name: create_session(path, threads) for name, path in models.items()}
    return interleaved_times(sessions, feed, rounds, WARMUP)


def block_ratios(reference: list[float], other: list[float], blocks: int = BLOCKS) -> dict:
    """``reference / other`` (above 1: ``other`` is faster): the ratio of medians over all
    rounds, and the p25/p75 of the ratios of per-block medians."""
    ratios = [
        float(np.median(a) / np.median(b))
        for a, b in zip(
            np.array_split(np.asarray(reference), blocks),
            np.array_split(np.asarray(other), blocks),
            strict=True,
        )
    ]
    low, high = np.percentile(ratios, [25, 75])
    return {
        "ratio": float(np.median(reference) / np.median(other)),
        "p25": float(low),
        "p75": float(high),
    }


def pick_fastest(
    order: list[str], times: dict[str, dict[str, list[float]]], clock: str = "cpu_ms"
) -> tuple[str, list[dict]]:
    """The chosen name (see the module's rule) and every comparison made on the way."""
    chosen, comparisons = order[0], []
    for name in order[1:]:
        ratio = block_ratios(times[chosen][clock], times[name][clock])
        wins = ratio["p25"] > 1.0 + MARGIN
        comparisons.append({"incumbent": chosen, "challenger": name, **ratio, "replaced": wins})
        if wins:
            chosen = name
    return chosen, comparisons


def summarise(
    times: dict[str, dict[str, list[float]]], reference: str, describe: Callable[[str], dict]
) -> list[dict]:
    """One row per timed model: p50 of both clocks and both ratios against ``reference``."""
    rows = []
    for name, clocks in times.items():
        row = {**describe(name)}
        for clock, values in clocks.items():
            row[f"{clock[:-3]}_p50_ms"] = float(np.median(values))
            row[f"{clock[:-3]}_vs_reference"] = block_ratios(times[reference][clock], values)
        rows.append(row)
    return rows
