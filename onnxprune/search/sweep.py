"""``sweep``: verify every combination of sparsity, method and quantization; mark the Pareto
front.

Each combination is one ``compress`` run (clean-up, pruning, optional quantization) verified on
the whole evaluation data with the same gates. The table has one row per combination in grid
order, whatever order the workers finish in: in this process, in up to ``MAX_WORKERS`` local
worker processes, or as Ray tasks (``ray`` names a cluster address, ``auto``, or ``local`` for
a new local instance). A row is on the Pareto front when no other row is at least as good on
the objective and on every quality loss (accuracy drop or 1 - cosine, worst-group drop) and
better on one. Latency is measured only for ``objective="latency"`` (and varies run to run).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from onnxprune.calibration import CalibrationOptions
from onnxprune.compress import compress_file
from onnxprune.errors import InputError
from onnxprune.pruning import PruneOptions
from onnxprune.quantize import QuantizeOptions
from onnxprune.search.candidates import summary
from onnxprune.search.options import NO_CONFIGURATION, OBJECTIVES
from onnxprune.search.parallel import run_jobs
from onnxprune.structured.pipeline import StructuredOptions
from onnxprune.verify import Gates, VerifyOptions

__all__ = ["MAX_WORKERS", "SweepOptions", "pareto_front", "run_sweep"]

logger = logging.getLogger(__name__)
MAX_WORKERS = 2


@dataclass(frozen=True)
class SweepOptions:
    """The grid (sparsities x methods x quantization modes) and where it runs."""

    sparsities: tuple[float, ...]
    methods: tuple[str, ...]
    quantize: tuple[str | None, ...] = (None,)
    objective: str = "size"
    workers: int = 1
    ray: str | None = None

    def validate(self) -> None:
        if not self.sparsities or not self.methods:
            raise InputError("sweep needs at least one sparsity and one method")
        if not all(0.0 <= s < 1.0 for s in self.sparsities):
            raise InputError("sweep sparsities must lie in [0, 1)")
        if self.objective not in OBJECTIVES:
            raise InputError(f"unknown objective '{self.objective}' ({', '.join(OBJECTIVES)})")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise InputError(f"--workers must be 1 to {MAX_WORKERS}, got {self.workers}")


@dataclass(frozen=True)
class Job:
    """One grid point, with everything a worker process needs."""

    index: int
    model: str
    prune: PruneOptions | StructuredOptions
    quantize: QuantizeOptions | None
    verify: VerifyOptions
    gates: Gates
    calibration: CalibrationOptions


def _objective(report: dict, objective: str) -> float | None:
    verification = report["verification"]
    if objective == "size":
        return float(verification["size"]["candidate"]["compressed_bytes"])
    if objective == "latency":
        return verification.get("latency", {}).get("candidate", {}).get("p50_ms")
    macs = (report["pruning"] or {}).get("macs")
    return float(macs["after"]) if macs else None


def run_job(job: Job, objective: str) -> dict:
    """Compress and verify one grid point in a scratch folder; its table row."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-sweep-") as folder:
        report = compress_file(
            job.model,
            Path(folder) / "candidate.onnx",
            job.prune,
            job.verify,
            job.gates,
            job.calibration,
            quantize=job.quantize,
        )
    options = report["pruning"]["options"]
    measured = summary(report["verification"], report["gates"])
    return {
        "index": job.index,
        "method": options.get("method") or options.get("importance"),
        "sparsity": options.get("target_sparsity", options.get("sparsity")),
        "achieved_sparsity": report["pruning"]["totals"].get("sparsity_after"),
        "quantize": job.quantize.mode if job.quantize else None,
        "objective": _objective(report, objective),
        "bytes": report["verification"]["size"]["candidate"]["bytes"],
        "compressed_bytes": report["verification"]["size"]["candidate"]["compressed_bytes"],
        **{k: v for k, v in measured.items() if k != "gates"},
        "gates": measured["gates"],
        "passed": report["passed"],
    }


def _losses(row: dict) -> tuple[float, ...]:
    quality = row["accuracy_drop"]
    if quality is None:
        quality = 1.0 - (row["cosine_mean"] if row["cosine_mean"] is not None else 0.0)
    worst = row["worst_group_drop"] if row["worst_group_drop"] is not None else 0.0
    objective = row["objective"] if row["objective"] is not None else float("inf")
    return (objective, quality, worst)


def pareto_front(rows: list[dict]) -> list[bool]:
    """For each row: whether no other row dominates it (objective and losses, lower better)."""
    points = [_losses(row) for row in rows]
    marks = []
    for point in points:
        dominated = any(
            all(o <= p for o, p in zip(other, point, strict=True)) and other != point
            for other in points
        )
        marks.append(not dominated)
    return marks


def _jobs(model, prune, options, verify, gates, calibration) -> list[Job]:
    structured = isinstance(prune, StructuredOptions)
    grid = itertools.product(options.sparsities, options.methods, options.quantize)
    jobs = []
    for index, (sparsity, method, mode) in enumerate(grid):
        if structured:
            config = replace(prune, sparsity=sparsity, importance=method)
        else:
            config = replace(prune, target_sparsity=sparsity, method=method)
        quantize = (
            None if mode is None else QuantizeOptions(mode=mode, calibration=prune.calibration)
        )
        jobs.append(Job(index, str(model), config, quantize, verify, gates, calibration))
    return jobs


def run_sweep(
    model: str | os.PathLike,
    prune_options: PruneOptions | StructuredOptions,
    options: SweepOptions,
    verify_options: VerifyOptions,
    gates: Gates | None = None,
    calibration_options: CalibrationOptions | None = None,
) -> dict:
    """Verify every grid point; the table (rows in grid order, Pareto front marked)."""
    options.validate()
    if options.objective != "latency":
        verify_options = replace(verify_options, latency_runs=0)
    jobs = _jobs(
        model,
        prune_options,
        options,
        verify_options,
        gates or Gates(),
        calibration_options or CalibrationOptions(),
    )
    for job in jobs:  # refuse bad options before starting any worker
        job.prune.validate() if isinstance(job.prune, PruneOptions) else job.prune.validate(
            job.prune.calibration is not None
        )
    rows = sorted(
        run_jobs(jobs, options.objective, options.workers, options.ray),
        key=lambda row: row["index"],
    )
    for row, mark in zip(rows, pareto_front(rows), strict=True):
        row["pareto"] = mark
    passing = [row for row in rows if row["passed"]]
    return {
        "command": "sweep",
        "model": str(model),
        "objective": options.objective,
        "rows": rows,
        "passed": bool(passing),
        "verdict": f"{len(passing)} of {len(rows)} configurations hold the budget"
        if passing
        else NO_CONFIGURATION,
    }


def start_method() -> str:
    """Worker processes are started fresh (``spawn``): onnxruntime is not fork-safe."""
    return "spawn" if "spawn" in multiprocessing.get_all_start_methods() else "fork"
