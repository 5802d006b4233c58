"""Benchmark: explanation drift against sparsity (a benchmark, not a test).

The Adult MLP and the digits CNN, magnitude-pruned (unstructured, per layer) at 50/70/90%
with ``compress --explain N``: accuracy drop, top-1 agreement, explanation agreement (mean
top-k overlap), Spearman, sign agreement, global ranking Spearman, and the time per explained
sample (both models). Prints a table, writes ``bench/results/explain.json`` and, with
matplotlib installed, the agreement curve ``bench/results/explain.svg``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import run_cli, write_results  # noqa: E402

FIXTURES = HERE.parent / "fixtures"
MODELS = ("adult_mlp", "digits_cnn")
SPARSITIES = (0.5, 0.7, 0.9)
SAMPLES = 100


def _row(name: str, sparsity: float, folder: Path) -> dict:
    run = run_cli(
        [
            "compress", str(FIXTURES / f"{name}.onnx"),
            "-o", str(folder / f"{name}-{sparsity}.onnx"),
            "--target-sparsity", str(sparsity), "--data", str(FIXTURES / f"{name}-eval.npz"),
            "--latency-runs", "0", "--no-default-budget", "--explain", str(SAMPLES),
        ]
    )  # fmt: skip
    report = run["report"]
    section, quality = report["explanation"], report["verification"]["quality"]
    return {
        "model": name,
        "sparsity": sparsity,
        "unit": section["unit"],
        "units": section["units"],
        "samples": section["samples"],
        "accuracy_drop": quality.get("accuracy_drop"),
        "top1_agreement": quality.get("top1_agreement"),
        "agreement": section["aggregate"]["agreement"],
        "spearman_mean": section["aggregate"]["spearman_mean"],
        "sign_agreement_mean": section["aggregate"]["sign_agreement_mean"],
        "global_spearman": section["global"]["spearman"],
        "seconds_per_sample": section["seconds_per_sample"],
    }


def _curve(rows: list[dict]) -> Path | None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(5, 3.2), layout="constrained")
    ax = figure.subplots()
    for name in MODELS:
        mine = [r for r in rows if r["model"] == name]
        ax.plot([r["sparsity"] for r in mine], [r["agreement"] for r in mine], "o-", label=name)
    ax.set_xlabel("sparsity (unstructured magnitude, per layer)")
    ax.set_ylabel(f"explanation agreement (top-5 overlap, {SAMPLES} samples)")
    ax.set_ylim(0, 1.02)
    ax.legend()
    path = HERE / "results" / "explain.svg"
    figure.savefig(path, format="svg", metadata={"Date": None})
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        rows = [_row(name, s, Path(folder)) for name in MODELS for s in SPARSITIES]
    print(f"{'model':<12} {'sparsity':>8} {'acc drop':>9} {'top1 agr':>9} {'expl agr':>9} "
          f"{'spearman':>9} {'sign':>6} {'global':>7} {'s/sample':>9}")  # fmt: skip
    for r in rows:
        print(
            f"{r['model']:<12} {r['sparsity']:>8.1f} {100 * r['accuracy_drop']:>8.2f}pt "
            f"{r['top1_agreement']:>9.3f} {r['agreement']:>9.3f} {r['spearman_mean']:>9.3f} "
            f"{r['sign_agreement_mean']:>6.3f} {r['global_spearman']:>7.3f} "
            f"{r['seconds_per_sample']:>9.4f}"
        )
    print(f"wrote {write_results('explain', {'samples': SAMPLES, 'rows': rows})}")
    curve = _curve(rows)
    if curve:
        print(f"wrote {curve}")


if __name__ == "__main__":
    main()
