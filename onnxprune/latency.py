"""Latency of two models measured the fair way on a noisy machine.

Both sessions get the same input batch; after warm-up, runs alternate between the models (the
order flips every round, so neither always runs on a warmer cache), and the report gives the
median and 95th percentile of each plus the ratio of medians. The per-run times are kept too
(``times_ms``, in run order, at most ``MAX_RAW_TIMES`` of them, rounded to ``RAW_DIGITS``
significant digits) so a report can show the whole distribution, not only its percentiles.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

__all__ = ["interleaved_times", "measure_latency"]


def interleaved_times(
    sessions: dict[str, ort.InferenceSession],
    feed: dict[str, np.ndarray],
    runs: int,
    warmup: int,
) -> dict[str, dict[str, list[float]]]:
    """Per session, its ``wall_ms`` and ``cpu_ms`` (this thread's CPU time) per round: after
    ``warmup`` rounds, ``runs`` rounds in which every session runs once, the order rotating by
    one each round (for two sessions: alternating)."""
    names = list(sessions)
    for _ in range(warmup):
        for name in names:
            sessions[name].run(None, feed)
    times: dict[str, dict[str, list[float]]] = {n: {"wall_ms": [], "cpu_ms": []} for n in names}
    for index in range(runs):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            cpu, wall = time.thread_time(), time.perf_counter()
            sessions[name].run(None, feed)
            times[name]["wall_ms"].append((time.perf_counter() - wall) * 1000.0)
            times[name]["cpu_ms"].append((time.thread_time() - cpu) * 1000.0)
    return times


# Fewer interleaved pairs than this give a ratio too noisy to call a speed-up.
MIN_PAIRS = 20
# Per-pair ratios must clear 1 by this margin: a model timed against a copy of itself on these
# machines shows quartiles up to ~1.05x apart from 1 when the other core is busy.
NOISE_MARGIN = 1.05
# Raw per-run times kept in the report: enough for a distribution plot, small in the JSON.
MAX_RAW_TIMES = 1000
RAW_DIGITS = 4


def _raw_times(values: list[float]) -> list[float]:
    """``values`` rounded to ``RAW_DIGITS`` significant digits; evenly thinned to at most
    ``MAX_RAW_TIMES`` (the first and last runs are always kept)."""
    if len(values) > MAX_RAW_TIMES:
        picks = np.linspace(0, len(values) - 1, MAX_RAW_TIMES).round().astype(int)
        values = [values[i] for i in picks]
    return [float(f"{v:.{RAW_DIGITS}g}") for v in values]


def _spread(ratios: np.ndarray) -> dict:
    low, high = (float(v) for v in np.percentile(ratios, [25, 75]))
    return {"speedup_iqr": [low, high]}


def _verdict(runs: int, low: float, high: float, speedup: float) -> tuple[bool, str | None]:
    if runs < MIN_PAIRS:
        return False, f"only {runs} interleaved pairs (< {MIN_PAIRS}): the ratio is indicative only"
    if low <= NOISE_MARGIN and high >= 1 / NOISE_MARGIN:
        return False, (
            f"the middle half of per-pair ratios ({low:.2f}x-{high:.2f}x) reaches within "
            f"{NOISE_MARGIN - 1:.0%} of 1: no measurable speed difference (ratio {speedup:.2f}x)"
        )
    return True, None


def measure_latency(
    baseline: ort.InferenceSession,
    candidate: ort.InferenceSession,
    feed: dict[str, np.ndarray],
    runs: int = 50,
    warmup: int = 5,
) -> dict:
    """Interleaved latency of ``baseline`` and ``candidate`` on ``feed``, in milliseconds.

    ``speedup`` is baseline p50 / candidate p50: above 1 means the candidate is faster. Its
    spread is the interquartile range of the per-round ratios (``speedup_iqr``);
    ``conclusive`` is False (with a ``note``) when there were fewer than ``MIN_PAIRS`` rounds or
    that range comes within ``NOISE_MARGIN`` of 1, so noise is never shown as a speed-up. Each
    model's entry also holds its per-run times (``times_ms``, see ``_raw_times``).
    """
    sessions = {"baseline": baseline, "candidate": candidate}
    clocks = interleaved_times(sessions, feed, runs, warmup)
    times = {name: clocks[name]["wall_ms"] for name in sessions}
    result: dict = {"runs": runs, "warmup": warmup}
    for name, values in times.items():
        result[name] = {
            "p50_ms": float(np.percentile(values, 50)),
            "p95_ms": float(np.percentile(values, 95)),
            "iqr_ms": [float(v) for v in np.percentile(values, [25, 75])],
            "times_ms": _raw_times(values),
        }
    result["speedup"] = result["baseline"]["p50_ms"] / result["candidate"]["p50_ms"]
    ratios = np.asarray(times["baseline"]) / np.asarray(times["candidate"])
    result.update(_spread(ratios))
    conclusive, note = _verdict(runs, *result["speedup_iqr"], result["speedup"])
    result["conclusive"] = conclusive
    if note:
        result["note"] = note
    return result
