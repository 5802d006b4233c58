"""Helpers shared by the benchmarks: run the CLI in a child process, embeddings, latency."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def run_cli(args: list[str]) -> dict:
    """``onnxprune ARGS --json`` in a child process: wall time, its own peak RSS, the report."""
    command = [sys.executable, str(HERE / "peak_memory.py"), "cli.main", *args, "--json"]
    with tempfile.TemporaryDirectory() as folder:
        peak_file = Path(folder) / "peak"
        start = time.perf_counter()
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=HERE.parent,
            env={**os.environ, "PEAK_FILE": str(peak_file)},
            check=False,
        )
        seconds = time.perf_counter() - start
        if done.returncode not in (0, 1):
            raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr}")
        peak_mb = int(peak_file.read_text()) / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "report": json.loads(done.stdout)}


def cpu_timed(args: list[str]) -> dict:
    """``run_cli`` plus the CPU seconds the child used (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_cli(args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**run, "cpu_seconds": cpu}


def session(model: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def embeddings(model: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    """Mean-pooled (over real tokens), L2-normalised sentence embeddings."""
    runner, out = session(model), []
    for start in range(0, len(data["input_ids"]), 64):
        feed = {k: v[start : start + 64] for k, v in data.items()}
        (hidden,) = runner.run(None, feed)
        mask = feed["attention_mask"][..., None].astype(np.float64)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def latency_ratio(dense: Path, pruned: Path, feed: dict, pairs: int = 30, warmup: int = 5) -> dict:
    """Dense/pruned median latency, interleaved in this process (order alternates per pair)."""
    sessions = {"dense": session(dense), "pruned": session(pruned)}
    for _ in range(warmup):
        for runner in sessions.values():
            runner.run(None, feed)
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    for index in range(pairs):
        for name in ("dense", "pruned") if index % 2 == 0 else ("pruned", "dense"):
            start = time.perf_counter()
            sessions[name].run(None, feed)
            times[name].append(time.perf_counter() - start)
    dense_ms, pruned_ms = (1000 * float(np.median(times[n])) for n in ("dense", "pruned"))
    return {"dense_ms": dense_ms, "pruned_ms": pruned_ms, "ratio": dense_ms / pruned_ms}


def write_results(name: str, data: dict) -> Path:
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{name}.json"
    data = {"machine": {"cpus": os.cpu_count(), "onnxruntime": ort.__version__}, **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
