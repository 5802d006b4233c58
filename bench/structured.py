"""Benchmark: structured pruning for real speed (a benchmark, not a test).

MiniLM (all-MiniLM-L6-v2) exported with transformers' default attention (SDPA; ``--attention
eager`` for the decomposed one) by the TorchScript and dynamo exporters: 25/50/75% of
feed-forward neurons, 25/50% of attention heads, and 50% of both, repaired from 128 calibration
sentences; mean embedding cosine to the dense model on 512 held-out sentences. The digits CNN:
30/50% of channels; accuracy on its eval set.

Speed is a ratio measured in one process: the two models alternate (order flipping every
round) after warm-up, and the ratio is dense p50 / pruned p50 over ``--pairs`` rounds, with the
interquartile range of the per-round ratios as its spread. Each MiniLM row is also timed
against the dense export normalised as every onnxprune output is (``normalized``), so that
onnxruntime's shape-dependent fusions are the same on both sides. MiniLM runs at batch 16 x 64
tokens (``--batches`` adds others), the CNN at batch 1 and 64. With ``--optimize`` every
MiniLM model, dense and pruned, also goes through ``onnxprune.optimize`` (onnxruntime fusions),
and each row adds the optimised pruned model against the original dense one (what pruning and
fusion bought together) and against the equally optimised dense one (what pruning bought), and
the optimised dense model against the original (what fusion bought). Results go to
``bench/results/structured_default.json`` (``structured.json`` with ``--attention eager``).
The MAC ratio is per token.

    python bench/structured.py [--exporters torchscript dynamo] [--attention default|eager]
        [--configs "ffn 50%" ...] [--optimize] [--pairs 40] [--batches 16 1]
        [--threads N] [--reuse] [--skip-minilm] [--skip-cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import minilm_export  # noqa: E402
from common import embeddings, run_cli, session, write_results  # noqa: E402
from minilm import WORK, prepare  # noqa: E402

from onnxprune.latency import measure_latency  # noqa: E402

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


THREADS = [0]  # onnxruntime intra-op threads (0: all cores), set from --threads


def speed(baseline: Path, candidate: Path, feed: dict, pairs: int) -> dict:
    """Interleaved ratio baseline p50 / candidate p50 with its spread (see the docstring)."""
    sessions = session(baseline, THREADS[0]), session(candidate, THREADS[0])
    result = measure_latency(*sessions, feed, runs=pairs, warmup=5)
    return {
        "ratio": result["speedup"],
        "iqr": result["speedup_iqr"],
        "baseline_ms": result["baseline"]["p50_ms"],
        "candidate_ms": result["candidate"]["p50_ms"],
        "pairs": pairs,
    }


def optimized(model: Path) -> tuple[Path, dict]:
    """``model`` after ``onnxprune.optimize`` (written once beside it), and the fusions made."""
    import onnx_ir as ir

    from onnxprune.model_io import save_model
    from onnxprune.optimize import OptimizeForRuntimePass

    out = model.with_name(model.stem + ".optimized.onnx")
    work = ir.load(model)
    ir.external_data.load_to_model(work)
    fusions = OptimizeForRuntimePass()
    fusions(work)
    save_model(work, out)
    return out, fusions.fusions


def normalized(model: Path) -> Path:
    """``model`` as every onnxprune output is (``NormalizeModelPass``: constants lifted, shapes
    inferred), written once beside it: onnxruntime fuses more once it knows the shapes (e.g.
    SkipLayerNormalization), which can make it faster or slower than the raw export."""
    import onnx_ir as ir

    from onnxprune.model_io import save_model
    from onnxprune.normalize import NormalizeModelPass

    out = model.with_name(model.stem + ".normalized.onnx")
    work = ir.load(model)
    ir.external_data.load_to_model(work)
    NormalizeModelPass()(work)
    save_model(work, out)
    return out


def _print(model: str, config: str, quality: str, value: float, macs: float, timings: dict) -> None:
    cells = "  ".join(
        f"{key} {t['ratio']:.2f}x [{t['iqr'][0]:.2f}-{t['iqr'][1]:.2f}]"
        for key, t in timings.items()
    )
    print(f"{model:<22} {config:<30} {quality} {value:.4f}  MACs /{macs:.2f}  {cells}", flush=True)


def _prune(model: Path, out: Path, args: list[str], calibration: Path, reuse: bool) -> dict:
    """``onnxprune prune`` in a child process (or, with ``reuse``, its earlier run)."""
    saved = out.with_name(out.stem + ".run.json")
    command = ["prune", str(model), "-o", str(out), "--calibration", str(calibration), *args]
    if reuse and out.exists() and saved.exists():
        run = json.loads(saved.read_text())
        if run["command"] == command:
            return run
    out.parent.mkdir(parents=True, exist_ok=True)
    run = {"command": command, **run_cli(command)}
    saved.write_text(json.dumps(run))
    return run


def minilm_rows(options: argparse.Namespace) -> list[dict]:
    prepare()  # calibration and held-out sentences
    paths = minilm_export.export(WORK, attention=options.attention)
    held = dict(np.load(WORK / "heldout.npz"))
    feeds = {f"b{b}": {k: v[:b] for k, v in held.items()} for b in options.batches}
    configs = [c for c in MINILM if not options.configs or c[0] in options.configs]
    rows = []
    for exporter in options.exporters:
        dense, name = paths[exporter], f"minilm/{exporter}/{options.attention}"
        reference = embeddings(dense, held)
        dense_norm = normalized(dense)
        dense_opt, fusions = optimized(dense) if options.optimize else (None, {})
        if dense_opt is not None:
            fused = {k: speed(dense, dense_opt, f, options.pairs) for k, f in feeds.items()}
            rows.append({"model": name, "config": "dense optimised", "fusions": fusions})
            rows[-1]["speed"] = fused
            _print(name, f"dense optimised {fusions}", "-", 0.0, 1.0, fused)
        for label, args in configs:
            stem = label.split(" (")[0].replace(" ", "_").replace("%", "")
            out = WORK / "structured" / f"{exporter}_{options.attention}" / f"{stem}.onnx"
            run = _prune(dense, out, args, WORK / "calibration.npz", options.reuse)
            cosine = float(np.mean(np.sum(reference * embeddings(out, held), axis=1)))
            timings = {k: speed(dense, out, feed, options.pairs) for k, feed in feeds.items()}
            for key, feed in feeds.items():
                timings[f"{key} vs dense normalised"] = speed(dense_norm, out, feed, options.pairs)
            row = {"model": name, "config": label, "cosine": cosine, "seconds": run["seconds"]}
            if dense_opt is not None:
                out_opt, pruned_fusions = optimized(out)
                row["fusions"] = {"dense": fusions, "pruned": pruned_fusions}
                for key, feed in feeds.items():
                    timings[f"{key} pruned+opt vs dense"] = speed(
                        dense, out_opt, feed, options.pairs
                    )
                    timings[f"{key} pruned+opt vs dense+opt"] = speed(
                        dense_opt, out_opt, feed, options.pairs
                    )
            macs = run["report"]["pruning"]["macs"]["reduction"]
            rows.append({**row, "mac_reduction": macs, "speed": timings})
            _print(name, label, "cosine", cosine, macs, timings)
    return rows


def cnn_rows(pairs: int) -> list[dict]:
    model = FIXTURES / "digits_cnn.onnx"
    data = dict(np.load(FIXTURES / "digits_cnn-eval.npz"))
    labels = data.pop("label")
    dense_acc = float(np.mean(session(model).run(None, data)[0].argmax(1) == labels))
    rows = []
    for label, args in CNN:
        out = WORK / "structured" / ("cnn_" + label.replace(" ", "_").replace("%", "") + ".onnx")
        run = _prune(model, out, args, FIXTURES / "digits_cnn-calibration.npz", False)
        accuracy = float(np.mean(session(out).run(None, data)[0].argmax(1) == labels))
        timings = {f"b{b}": speed(model, out, {"input": data["input"][:b]}, pairs) for b in (1, 64)}
        macs = run["report"]["pruning"]["macs"]["reduction"]
        rows.append(
            {
                "model": "digits_cnn",
                "config": label,
                "accuracy": accuracy,
                "accuracy_drop_pt": 100 * (dense_acc - accuracy),
                "mac_reduction": macs,
                "speed": timings,
            }
        )
        _print("digits_cnn", label, "accuracy", accuracy, macs, timings)
    print(f"digits_cnn dense accuracy {dense_acc:.4f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    parser.add_argument("--attention", choices=["default", "eager"], default="default")
    parser.add_argument("--configs", nargs="+", help="MiniLM rows to run (labels as printed)")
    parser.add_argument("--optimize", action="store_true", help="also time optimised models")
    parser.add_argument("--pairs", type=int, default=40, help="interleaved rounds per ratio")
    parser.add_argument("--batches", type=int, nargs="+", default=[16], help="MiniLM batch sizes")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all)")
    parser.add_argument("--reuse", action="store_true", help="reuse pruned models of a run")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--skip-cnn", action="store_true")
    options = parser.parse_args()
    if options.pairs < 30:
        parser.error("--pairs must be at least 30")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    THREADS[0] = options.threads
    rows = [] if options.skip_cnn else cnn_rows(options.pairs)
    if not options.skip_minilm:
        rows += minilm_rows(options)
    results = {
        "attention": options.attention,
        "threads": options.threads,
        "pairs": options.pairs,
        "rows": rows,
    }
    name = "structured" if options.attention == "eager" else f"structured_{options.attention}"
    print(f"\nwrote {write_results(name, results)}")


if __name__ == "__main__":
    main()
