"""Benchmark: latency of quantized models against the float model, interleaved in one process.

One onnxruntime intra-op thread per session (the machine is shared), warm-up, then ``rounds``
rounds that run every model ``repeat`` times in a rotating order. Per model: median wall and
thread-CPU milliseconds per run with p25/p75, and dense/model ratios of the medians. The kernel
accounts thread CPU time in scheduler ticks (4 ms here), so a sample must span many ticks:
``repeat`` runs per sample at small batches. Paired ratios: per round, the reference's time over
the model's in that same round (p25/median/p75 over rounds): other jobs on a shared machine slow
both alike within a round, so their spread is the comparison's own, not the machine's. Prints
one JSON document; ``--out NAME`` also writes it to ``bench/results/NAME.json``.

    python bench/quant_speed.py REFERENCE.onnx MODEL.onnx [MODEL.onnx ...] --batch 1 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402

HELD = HERE / "work" / "heldout.npz"

__all__ = ["measure"]


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def _stats(values, factor: float = 1000) -> dict:
    p25, p50, p75 = np.percentile(np.array(values) * factor, [25, 50, 75])
    return {"p25": round(float(p25), 3), "p50": round(float(p50), 3), "p75": round(float(p75), 3)}


def paired_ratios(reference: list[float], model: list[float]) -> dict:
    """Per round, the reference's time over the model's (above 1: the model is faster)."""
    return _stats(np.array(reference) / np.array(model), factor=1)


def measure(
    paths: list[Path], feed: dict, rounds: int = 40, warmup: int = 5, repeat: int = 1
) -> dict:
    """Interleaved wall and CPU latency of every model; ratios against ``paths[0]``."""
    sessions = [_session(p) for p in paths]
    for _ in range(warmup):
        for runner in sessions:
            runner.run(None, feed)
    wall: list[list[float]] = [[] for _ in paths]
    cpu: list[list[float]] = [[] for _ in paths]
    for index in range(rounds):
        shift = index % len(paths)
        for k in [*range(shift, len(paths)), *range(shift)]:
            start_wall, start_cpu = time.perf_counter(), _cpu()
            for _ in range(repeat):
                sessions[k].run(None, feed)
            cpu[k].append((_cpu() - start_cpu) / repeat)
            wall[k].append((time.perf_counter() - start_wall) / repeat)
    rows = []
    for k, path in enumerate(paths):
        row = {"model": path.name, "wall_ms": _stats(wall[k]), "cpu_ms": _stats(cpu[k])}
        row["paired_wall_ratio"] = paired_ratios(wall[0], wall[k])
        row["paired_cpu_ratio"] = paired_ratios(cpu[0], cpu[k])
        for kind in ("wall", "cpu"):
            row[f"{kind}_ratio"] = round(
                float(np.median(wall[0] if kind == "wall" else cpu[0]))
                / float(np.median(wall[k] if kind == "wall" else cpu[k])),
                3,
            )
        rows.append(row)
    return {"rounds": rounds, "repeat": repeat, "load": os.getloadavg()[0], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="reference model first")
    parser.add_argument("--batch", type=int, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=0, help="runs per sample (0: 10 at b1)")
    parser.add_argument("--out", default=None, help="also write bench/results/OUT.json")
    options = parser.parse_args()
    held = dict(np.load(HELD))
    result = {}
    for batch in options.batch or [1, 16]:
        feed = {k: v[:batch] for k, v in held.items()}
        repeat = options.repeat or (10 if batch == 1 else 1)
        result[f"b{batch}"] = measure(options.models, feed, options.rounds, repeat=repeat)
    if options.out:
        write_results(options.out, {"models": [str(p) for p in options.models], **result})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
