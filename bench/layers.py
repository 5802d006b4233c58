"""Benchmark: layer rewrites (a benchmark, not a test).

* Clean-up on every fixture and MiniLM: nodes removed and max abs output difference.
* drop-layers on MiniLM: each of the 12 residual sub-blocks dropped alone (held-out embedding
  cosine), and the block ``--blocks 1`` picks from calibration scores.
* grow on the fixtures: parameters added and max abs output difference.
Prints a table, writes ``bench/results/layers.json``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import embeddings, run_cli, write_results  # noqa: E402
from minilm import WORK, prepare  # noqa: E402

FIXTURES = HERE.parent / "fixtures"


def drop_rows() -> list[dict]:
    import onnx_ir as ir

    from onnxprune.model_io import load_model, save_model
    from onnxprune.residual import RemoveBlocksPass, find_residual_blocks

    dense_path = prepare()["torchscript"]
    held = dict(np.load(WORK / "heldout.npz"))
    dense = embeddings(dense_path, held)
    out = WORK / "layers" / "drop1.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    run = run_cli(
        [
            "drop-layers",
            str(dense_path),
            "-o",
            str(out),
            "--blocks",
            "1",
            "--calibration",
            str(WORK / "calibration.npz"),
            "--latency-runs",
            "0",
        ]
    )
    picked = run["report"]["drop_layers"]["dropped"][0]
    model = load_model(dense_path)
    ir.passes.common.NameFixPass()(model)
    ir.passes.common.ShapeInferencePass()(model)
    rows = []
    for block in find_residual_blocks(model):
        candidate = model.clone()
        RemoveBlocksPass([block])(candidate)
        path = WORK / "layers" / "single.onnx"
        save_model(candidate, path, external_data=False)
        cosine = float(np.mean(np.sum(dense * embeddings(path, held), axis=1)))
        rows.append({"block": block.add, "held_out_cosine": cosine, "picked": block.add == picked})
        print(
            f"drop {block.add:<50} held-out cosine {cosine:.4f}"
            f"{'  <- picked by --blocks 1' if block.add == picked else ''}",
            flush=True,
        )
    return rows


def fixture_rows() -> list[dict]:
    rows = []
    (WORK / "layers").mkdir(parents=True, exist_ok=True)
    cases = [
        ("digits_cnn", "/stem/stem.1/stem.1.2/Relu", "block.0.0.weight"),
        ("adult_mlp", "/net/net.1/Relu", "net.0.weight"),
        ("digits_transformer", None, "heads:onnx::MatMul_260"),
    ]
    for name, deeper, wider in cases:
        model, data = FIXTURES / f"{name}.onnx", FIXTURES / f"{name}-eval.npz"
        out = WORK / "layers" / f"{name}.onnx"
        cleanup = run_cli(
            [
                "compress",
                str(model),
                "-o",
                str(out),
                "--target-sparsity",
                "0",
                "--data",
                str(data),
                "--latency-runs",
                "0",
            ]
        )
        row = {
            "model": name,
            "cleanup_removed": cleanup["report"]["cleanup"]["total_removed"],
            "cleanup_max_abs_diff": cleanup["report"]["stages"][0]["max_abs_diff"],
        }
        for kind, target in (("deeper", deeper), ("wider", wider)):
            if target is None:
                continue
            grown = run_cli(
                [
                    "grow",
                    str(model),
                    "-o",
                    str(out),
                    f"--{kind}",
                    target,
                    "--data",
                    str(data),
                    "--latency-runs",
                    "0",
                ]
            )
            row[f"grow_{kind}_parameters"] = grown["report"]["grow"]["parameters"]
            row[f"grow_{kind}_max_abs_diff"] = grown["report"]["gates"][0]["value"]
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"fixtures": fixture_rows(), "minilm_drop_one_block": drop_rows()}
    print(f"\nwrote {write_results('layers', result)}")


if __name__ == "__main__":
    main()
