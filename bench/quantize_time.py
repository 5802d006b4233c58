"""Benchmark: int4 quantize time, onnxprune against onnxruntime's own quantizer, in one process.

Three jobs on MiniLM (default-attention export), each load -> quantize -> save, interleaved run
by run (the order alternates), after one warm-up round:

* ``onnxruntime MatMul``: ``MatMulNBitsQuantizer`` (block 32, asymmetric) on the MatMuls;
* ``onnxruntime MatMul+Gather``: the same with the embedding ``Gather`` tables too (the work
  onnxprune's int4 does);
* ``onnxprune``: ``quantize_model_file(mode="int4")`` (validation, normalisation, MatMuls, 4-bit
  tables, the written model checked and loaded in onnxruntime).

Per job: median wall and process-CPU seconds with p25/p75, and onnxprune's ratio to each.

    python bench/quantize_time.py [--runs 6]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402
from minilm import WORK  # noqa: E402

SOURCE = WORK / "minilm_torchscript_default.onnx"


def _ort(target: Path, gather: bool) -> None:
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(
        block_size=32,
        is_symmetric=False,
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=("MatMul", "Gather") if gather else ("MatMul",),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer = MatMulNBitsQuantizer(onnx.load(str(SOURCE)), algo_config=config)
    quantizer.process()
    quantizer.model.save_model_to_file(str(target))


def _ours(target: Path) -> None:
    from onnxprune.quantize import QuantizeOptions, quantize_model_file

    quantize_model_file(SOURCE, target, QuantizeOptions(mode="int4", block_size=32))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stats(values: list[float]) -> dict:
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return {"p25": round(float(p25), 3), "p50": round(float(p50), 3), "p75": round(float(p75), 3)}


def measure(runs: int, folder: Path) -> dict:
    jobs = {
        "onnxruntime MatMul": lambda: _ort(folder / "ort.onnx", False),
        "onnxruntime MatMul+Gather": lambda: _ort(folder / "ort_gather.onnx", True),
        "onnxprune": lambda: _ours(folder / "ours.onnx"),
    }
    wall: dict[str, list[float]] = {name: [] for name in jobs}
    cpu: dict[str, list[float]] = {name: [] for name in jobs}
    for run in range(runs + 1):
        order = list(jobs) if run % 2 == 0 else list(reversed(jobs))
        for name in order:
            start_wall, start_cpu = time.perf_counter(), _cpu()
            jobs[name]()
            if run:  # the first round warms up imports and caches
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(_cpu() - start_cpu)
    rows = {name: {"wall_s": _stats(wall[name]), "cpu_s": _stats(cpu[name])} for name in jobs}
    for name in ("onnxruntime MatMul", "onnxruntime MatMul+Gather"):
        rows["onnxprune"][f"ratio_to {name}"] = {
            kind: round(float(np.median(v["onnxprune"]) / np.median(v[name])), 2)
            for kind, v in (("wall", wall), ("cpu", cpu))
        }
    return {"runs": runs, "load": os.getloadavg()[0], "jobs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    options = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        result = measure(options.runs, Path(folder))
    print(json.dumps(result, indent=1))
    print(f"wrote {write_results('quantize_time', result)}")


if __name__ == "__main__":
    main()
