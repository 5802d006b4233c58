"""Benchmark: post-training pruning of all-MiniLM-L6-v2 (a benchmark, not a test).

Exports the model with torch's TorchScript and dynamo exporters, tokenises real English
sentences into a 128-sentence calibration set and a disjoint held-out set, prunes with every
configuration through the ``onnxprune prune`` command (wall time and peak memory of that
process), and reports the cosine between mean-pooled, normalised embeddings of the pruned and
the dense model on the held-out set. Prints a table and writes ``bench/results/minilm.json``.

    python bench/minilm.py [--exporters torchscript dynamo] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import minilm_export  # noqa: E402

WORK = HERE / "work"
RESULTS = HERE / "results"
HELD_OUT = 512
CALIBRATION = 128

# (label, prune arguments)
CONFIGS = [
    ("magnitude", ["--method", "magnitude"]),
    ("wanda", ["--method", "wanda"]),
    ("wanda+owl", ["--method", "wanda", "--allocation", "owl"]),
    ("sparsegpt", ["--method", "sparsegpt"]),
    ("sparsegpt+owl", ["--method", "sparsegpt", "--allocation", "owl"]),
]
SPARSITIES = [
    ("50%", ["--target-sparsity", "0.5"]),
    ("60%", ["--target-sparsity", "0.6"]),
    ("70%", ["--target-sparsity", "0.7"]),
    ("2:4", ["--pattern", "2:4"]),
]


def prepare() -> dict[str, Path]:
    paths = minilm_export.export(WORK)
    calibration, held_out = WORK / "calibration.npz", WORK / "heldout.npz"
    if not (calibration.exists() and held_out.exists()):
        texts = minilm_export.sentences(CALIBRATION + HELD_OUT)
        np.savez(calibration, **minilm_export.tokenise(texts[:CALIBRATION]))
        np.savez(held_out, **minilm_export.tokenise(texts[CALIBRATION:]))
    return paths


def embeddings(model: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    """Mean-pooled (over real tokens), L2-normalised sentence embeddings."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(data["input_ids"]), 64):
        feed = {k: v[start : start + 64] for k, v in data.items()}
        (hidden,) = session.run(None, feed)
        mask = feed["attention_mask"][..., None].astype(np.float64)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
    return np.concatenate(out)


def run_prune(model: Path, output: Path, args: list[str]) -> dict:
    """Run ``onnxprune prune`` in a child process; its wall time, peak RSS and report."""
    command = [
        sys.executable,
        str(HERE / "peak_memory.py"),
        "cli.main",
        "prune",
        str(model),
        "-o",
        str(output),
        "--calibration",
        str(WORK / "calibration.npz"),
        "--json",
        *args,
    ]
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
        if done.returncode:
            raise SystemExit(f"prune failed: {' '.join(command)}\n{done.stderr}")
        peak_mb = int(peak_file.read_text()) / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "report": json.loads(done.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    parser.add_argument("--quick", action="store_true", help="50% only, to smoke-test the bench")
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = prepare()
    held = dict(np.load(WORK / "heldout.npz"))
    rows = []
    sparsities = SPARSITIES[:1] if options.quick else SPARSITIES
    for exporter in options.exporters:
        dense = embeddings(paths[exporter], held)
        for label, config in CONFIGS:
            for sparsity, sparsity_args in sparsities:
                if "--allocation" in config and "--pattern" in sparsity_args:
                    continue  # N:M fixes every layer's sparsity: no allocation to choose
                output = WORK / "pruned" / exporter / f"{label}-{sparsity.replace(':', 'of')}.onnx"
                output.parent.mkdir(parents=True, exist_ok=True)
                run = run_prune(paths[exporter], output, [*config, *sparsity_args])
                cosine = np.sum(dense * embeddings(output, held), axis=1)
                rows.append(
                    {
                        "exporter": exporter,
                        "config": label,
                        "sparsity": sparsity,
                        "achieved_sparsity": run["report"]["pruning"]["totals"]["sparsity_after"],
                        "cosine_mean": float(cosine.mean()),
                        "cosine_min": float(cosine.min()),
                        "prune_seconds": run["seconds"],
                        "peak_memory_mb": run["peak_mb"],
                    }
                )
                print(_row(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "held_out_sentences": len(held["input_ids"]),
        "calibration_sentences": CALIBRATION,
        "rows": rows,
    }
    (RESULTS / "minilm.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'minilm.json'}")


def _row(row: dict) -> str:
    return (
        f"{row['exporter']:<12} {row['config']:<14} {row['sparsity']:>4}  "
        f"achieved {100 * row['achieved_sparsity']:5.2f}%  cosine mean {row['cosine_mean']:.4f}"
        f" min {row['cosine_min']:.4f}  {row['prune_seconds']:5.1f} s  "
        f"{row['peak_memory_mb']:6.0f} MB"
    )


if __name__ == "__main__":
    main()
