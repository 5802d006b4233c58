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
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import minilm_export  # noqa: E402
from common import embeddings, run_cli, write_results  # noqa: E402

WORK = HERE / "work"
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


def run_prune(model: Path, output: Path, args: list[str]) -> dict:
    return run_cli(
        [
            "prune",
            str(model),
            "-o",
            str(output),
            "--calibration",
            str(WORK / "calibration.npz"),
            *args,
        ]
    )


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
    path = write_results(
        "minilm",
        {
            "held_out_sentences": len(held["input_ids"]),
            "calibration_sentences": CALIBRATION,
            "rows": rows,
        },
    )
    print(f"\nwrote {path}")


def _row(row: dict) -> str:
    return (
        f"{row['exporter']:<12} {row['config']:<14} {row['sparsity']:>4}  "
        f"achieved {100 * row['achieved_sparsity']:5.2f}%  cosine mean {row['cosine_mean']:.4f}"
        f" min {row['cosine_min']:.4f}  {row['prune_seconds']:5.1f} s  "
        f"{row['peak_memory_mb']:6.0f} MB"
    )


if __name__ == "__main__":
    main()
