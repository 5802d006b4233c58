"""Latency of two models measured the fair way on a noisy machine.

Both sessions get the same input batch; after warm-up, runs alternate between the models (the
order flips every round, so neither always runs on a warmer cache), and the report gives the
median and 95th percentile of each plus the ratio of medians.
"""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort

__all__ = ["measure_latency"]


def _run_ms(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    session.run(None, feed)
    return (time.perf_counter() - start) * 1000.0


def measure_latency(
    baseline: ort.InferenceSession,
    candidate: ort.InferenceSession,
    feed: dict[str, np.ndarray],
    runs: int = 50,
    warmup: int = 5,
) -> dict:
    """Interleaved latency of ``baseline`` and ``candidate`` on ``feed``, in milliseconds.

    ``speedup`` is baseline p50 / candidate p50: above 1 means the candidate is faster.
    """
    sessions = {"baseline": baseline, "candidate": candidate}
    for _ in range(warmup):
        for session in sessions.values():
            session.run(None, feed)
    times: dict[str, list[float]] = {"baseline": [], "candidate": []}
    for round_index in range(runs):
        order = ("baseline", "candidate") if round_index % 2 == 0 else ("candidate", "baseline")
        for name in order:
            times[name].append(_run_ms(sessions[name], feed))
    result: dict = {"runs": runs, "warmup": warmup}
    for name, values in times.items():
        result[name] = {
            "p50_ms": float(np.percentile(values, 50)),
            "p95_ms": float(np.percentile(values, 95)),
        }
    result["speedup"] = result["baseline"]["p50_ms"] / result["candidate"]["p50_ms"]
    return result
