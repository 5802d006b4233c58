"""Benchmark: structured pruning for real speed (a benchmark, not a test).

MiniLM (TorchScript and dynamo exports, see ``bench/minilm.py``): 25/50/75% of feed-forward
neurons, 25/50% of attention heads, and 50% of both, repaired from 128 calibration sentences;
mean embedding cosine to the dense model on 512 held-out sentences. The digits CNN: 30/50% of
channels; accuracy on its eval set. Every row: MAC reduction (per token/sample) and the
dense/pruned latency ratio, interleaved in one process after warm-up, median of 30 pairs, at
batch 1 and batch 16 (sequence 64) for MiniLM, batch 1 and 64 for the CNN.

    python bench/structured.py [--exporters torchscript dynamo] [--skip-minilm] [--skip-cnn]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import embeddings, latency_ratio, run_cli, session, write_results  # noqa: E402
from minilm import WORK, prepare  # noqa: E402

FIXTURES = HERE.parent / "fixtures"
REPAIR = ["--structured", "--reconstruct"]
MINILM = [
    (
        "ffn 50% naive (l2, no repair)",
        ["--structured", "--importance", "l2", "--target", "ffn", "--target-sparsity", "0.5"],
    ),
    ("ffn 25%", [*REPAIR, "--target", "ffn", "--target-sparsity", "0.25"]),
    ("ffn 50%", [*REPAIR, "--target", "ffn", "--target-sparsity", "0.5"]),
    ("ffn 75%", [*REPAIR, "--target", "ffn", "--target-sparsity", "0.75"]),
    ("heads 25%", [*REPAIR, "--target", "heads", "--target-sparsity", "0.25"]),
    ("heads 50%", [*REPAIR, "--target", "heads", "--target-sparsity", "0.5"]),
    ("ffn+heads 50%", [*REPAIR, "--target", "all", "--target-sparsity", "0.5"]),
]
CNN = [
    ("channels 30%", [*REPAIR, "--target", "channels", "--target-sparsity", "0.3"]),
    ("channels 50%", [*REPAIR, "--target", "channels", "--target-sparsity", "0.5"]),
]


def _row(model: str, config: str, quality: str, value: float, run: dict, latency: dict) -> dict:
    macs = run["report"]["pruning"]["macs"]
    row = {
        "model": model,
        "config": config,
        quality: value,
        "mac_reduction": macs["reduction"],
        "prune_seconds": run["seconds"],
        "peak_memory_mb": run["peak_mb"],
        **latency,
    }
    ratios = "  ".join(f"{k} {v:.2f}x" for k, v in latency.items())
    print(
        f"{model:<18} {config:<30} {quality} {value:.4f}  MACs /{macs['reduction']:.2f}  "
        f"{ratios}  {run['seconds']:.1f} s",
        flush=True,
    )
    return row


def minilm_rows(exporters: list[str]) -> list[dict]:
    paths = prepare()
    held = dict(np.load(WORK / "heldout.npz"))
    batches = {
        "latency_b1": {k: v[:1] for k, v in held.items()},
        "latency_b16": {k: v[:16] for k, v in held.items()},
    }
    rows = []
    for exporter in exporters:
        dense = embeddings(paths[exporter], held)
        for label, args in MINILM:
            out = (
                WORK / "structured" / exporter / (label.split(" (")[0].replace(" ", "_") + ".onnx")
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            run = run_cli(
                [
                    "prune",
                    str(paths[exporter]),
                    "-o",
                    str(out),
                    "--calibration",
                    str(WORK / "calibration.npz"),
                    *args,
                ]
            )
            cosine = float(np.mean(np.sum(dense * embeddings(out, held), axis=1)))
            latency = {
                k: latency_ratio(paths[exporter], out, feed)["ratio"] for k, feed in batches.items()
            }
            rows.append(_row(f"minilm/{exporter}", label, "cosine", cosine, run, latency))
    return rows


def cnn_rows() -> list[dict]:
    model = FIXTURES / "digits_cnn.onnx"
    data = dict(np.load(FIXTURES / "digits_cnn-eval.npz"))
    labels = data.pop("label")
    dense_acc = float(np.mean(session(model).run(None, data)[0].argmax(1) == labels))
    rows = []
    for label, args in CNN:
        out = WORK / "structured" / ("cnn_" + label.replace(" ", "_").replace("%", "") + ".onnx")
        out.parent.mkdir(parents=True, exist_ok=True)
        run = run_cli(
            [
                "prune",
                str(model),
                "-o",
                str(out),
                "--calibration",
                str(FIXTURES / "digits_cnn-calibration.npz"),
                *args,
            ]
        )
        accuracy = float(np.mean(session(out).run(None, data)[0].argmax(1) == labels))
        latency = {
            f"latency_b{b}": latency_ratio(model, out, {"input": data["input"][:b]})["ratio"]
            for b in (1, 64)
        }
        row = _row("digits_cnn", label, "accuracy", accuracy, run, latency)
        row["accuracy_drop_pt"] = 100 * (dense_acc - accuracy)
        rows.append(row)
    print(f"digits_cnn dense accuracy {dense_acc:.4f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-cnn", action="store_true")
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [] if options.skip_cnn else cnn_rows()
    if not options.skip_minilm:
        rows += minilm_rows(options.exporters)
    print(f"\nwrote {write_results('structured', {'rows': rows})}")


if __name__ == "__main__":
    main()
