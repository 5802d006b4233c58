"""Benchmark: quantization alone and after structured pruning.

MiniLM (TorchScript export, default attention): int8 dynamic, int8 static, int4 weight-only
(MatMulNBits + GatherBlockQuantized, block 32), and structured 50% FFN + static int8; sizes,
held-out embedding cosine, dense/compressed latency ratio (interleaved, median of 30 pairs) at
batch 1 and 16 (sequence 64). Digits CNN: static int8 QDQ accuracy drop. Prints a table,
writes ``bench/results/quantize.json``. The side-by-side with onnxruntime's quantizers and
NNCF is ``bench/quantize_peers.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import embeddings, latency_ratio, run_cli, write_results  # noqa: E402
from minilm import WORK, prepare  # noqa: E402

FIXTURES = HERE.parent / "fixtures"
CALIBRATION = ["--calibration", str(WORK / "calibration.npz")]
CONFIGS = [
    ("int8 dynamic", ["quantize", "--mode", "dynamic"]),
    ("int8 static", ["quantize", "--mode", "static", *CALIBRATION]),
    ("int4 weight-only", ["quantize", "--mode", "int4", "--block-size", "32"]),
    (
        "ffn 50% + int8 static",
        [
            "compress",
            "--structured",
            "--target",
            "ffn",
            "--reconstruct",
            "--target-sparsity",
            "0.5",
            "--quantize",
            "int8-static",
            *CALIBRATION,
        ],
    ),
]


def _matmul_weight_bytes(path: Path) -> int:
    """Bytes of the weights feeding MatMul / MatMulNBits nodes (scales and zero points too)."""
    model = onnx.load(str(path))
    sizes = {t.name: len(onnx.numpy_helper.to_array(t).tobytes()) for t in model.graph.initializer}
    matmuls = [
        n for n in model.graph.node if n.op_type in ("MatMul", "MatMulNBits", "MatMulInteger")
    ]
    feeding = {name for node in matmuls for name in node.input[1:]}
    # static QDQ: the int8 weight, its scale and zero point feed a DequantizeLinear first
    dequantized = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    feeding |= {name for n in dequantized if n.output[0] in feeding for name in n.input}
    names = {name for name in feeding if name in sizes}
    return sum(sizes[name] for name in names)


def _files_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.exists())


def minilm_rows() -> list[dict]:
    prepare()
    dense_path = WORK / "minilm_torchscript_default.onnx"
    if not dense_path.exists():
        import minilm_export

        minilm_export.export(WORK, attention="default")
    held = dict(np.load(WORK / "heldout.npz"))
    dense = embeddings(dense_path, held)
    rows = []
    for label, args in CONFIGS:
        out = (
            WORK
            / "quantized"
            / (label.replace(" ", "_").replace("%", "").replace("+", "") + ".onnx")
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        run = run_cli(
            [
                args[0],
                str(dense_path),
                "-o",
                str(out),
                *args[1:],
                "--data",
                str(WORK / "heldout.npz"),
                "--latency-runs",
                "0",
                "--report",
                str(out.with_suffix(".json")),
            ]
        )
        cosine = np.sum(dense * embeddings(out, held), axis=1)
        row = {
            "model": "minilm/torchscript default attention",
            "config": label,
            "size_ratio": _files_bytes(dense_path) / _files_bytes(out),
            "matmul_weight_ratio": _matmul_weight_bytes(dense_path) / _matmul_weight_bytes(out),
            "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()),
            "seconds": run["seconds"],
        }
        for batch in (1, 16):
            feed = {k: v[:batch] for k, v in held.items()}
            row[f"latency_b{batch}"] = latency_ratio(dense_path, out, feed)["ratio"]
        rows.append(row)
        print(
            f"{label:<18} size /{row['size_ratio']:.2f}  MatMul weights "
            f"/{row['matmul_weight_ratio']:.2f}  cosine {row['cosine_mean']:.4f} "
            f"(min {row['cosine_min']:.4f})  speed b1 {row['latency_b1']:.2f}x "
            f"b16 {row['latency_b16']:.2f}x",
            flush=True,
        )
    return rows


def cnn_row() -> dict:
    model = FIXTURES / "digits_cnn.onnx"
    out = WORK / "quantized" / "digits_cnn_static.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    run = run_cli(
        [
            "quantize",
            str(model),
            "-o",
            str(out),
            "--mode",
            "static",
            "--calibration",
            str(FIXTURES / "digits_cnn-calibration.npz"),
            "--data",
            str(FIXTURES / "digits_cnn-eval.npz"),
            "--latency-batch",
            "64",
        ]
    )
    quality = run["report"]["verification"]["quality"]
    data = dict(np.load(FIXTURES / "digits_cnn-eval.npz"))
    feed = {"input": data["input"][:64]}
    row = {
        "model": "digits_cnn",
        "config": "static int8 QDQ",
        "accuracy_before": quality["accuracy_before"],
        "accuracy_after": quality["accuracy_after"],
        "accuracy_drop_pt": 100 * quality["accuracy_drop"],
        "size_ratio": _files_bytes(model) / _files_bytes(out),
        "latency_b64": latency_ratio(model, out, feed)["ratio"],
    }
    print(
        f"digits_cnn static int8: accuracy {row['accuracy_before']:.4f} -> "
        f"{row['accuracy_after']:.4f} (drop {row['accuracy_drop_pt']:.2f} pt), size "
        f"/{row['size_ratio']:.2f}, speed b64 {row['latency_b64']:.2f}x"
    )
    return row


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [cnn_row(), *minilm_rows()]
    print(f"\nwrote {write_results('quantize', {'rows': rows})}")


if __name__ == "__main__":
    main()
