"""Benchmark: onnxprune's quantization beside onnxruntime's own quantizers and NNCF on MiniLM.

Same model (default-attention TorchScript export, ``bench/minilm_export.py``), same data
(128 calibration / 512 held-out sentences, ``bench/minilm.py``), same measures: mean cosine of
mean-pooled embeddings to the float model on the held-out sentences, whole-file size ratio
(model plus external data), quantize wall time, and dense/quantized median latency at batch 1
and 16 (int8 rows): all int8 models and the float one in one process, interleaved round by
round, one onnxruntime thread each, wall and thread-CPU time with p25/p75
(``bench/quant_speed.py``). Digits CNN static int8 accuracy drop too. Composition with
pruning: MiniLM with structured FFN 50% repaired by ``bench/repair.py`` (its
``structured ffn 50%`` row; made here with that code when missing), timed in float and after
``quantize --mode static``, both against the dense model.
Prints the table, writes ``bench/results/quantize_peers.json``.

    python bench/quantize_peers.py [--skip-nncf]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import embeddings, run_cli, write_results  # noqa: E402
from minilm import WORK, prepare  # noqa: E402
from quant_speed import measure  # noqa: E402

OUT = WORK / "quantize_peers"
CALIBRATION = WORK / "calibration.npz"
FIXTURES = HERE.parent / "fixtures"
FFN_FLOAT = "onnxprune FFN 50% repaired (float)"
FFN_STATIC = "onnxprune FFN 50% repaired + static int8"
OURS = [
    ("onnxprune dynamic int8", "int8", ["--mode", "dynamic"]),
    (
        "onnxprune static int8 (every SmoothQuant Mul, the default)",
        "int8",
        ["--mode", "static", "--smooth", "0.95", "--calibration", str(CALIBRATION)],
    ),
    (
        "onnxprune static int8 --mul-budget 0.0005",
        "int8",
        ["--mode", "static", "--mul-budget", "0.0005", "--calibration", str(CALIBRATION)],
    ),
    (
        "onnxprune static int8 without SmoothQuant",
        "int8",
        ["--mode", "static", "--smooth", "off", "--calibration", str(CALIBRATION)],
    ),
    ("onnxprune int4 (asym, b32, embeddings)", "int4", ["--mode", "int4"]),
    (
        "onnxprune int4 + int8 25% most sensitive",
        "int4",
        ["--mode", "int4", "--int8-ratio", "0.25", "--calibration", str(CALIBRATION)],
    ),
]


def _files_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + ".data")) if p.exists())


def _calibration_items() -> list[dict]:
    data = dict(np.load(CALIBRATION))
    return [{k: v[i : i + 1] for k, v in data.items()} for i in range(len(data["input_ids"]))]


def ort_dynamic(source: Path, target: Path) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(source, target)


def ort_static(source: Path, target: Path) -> None:
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from onnxprune.data import input_specs, load_dataset
    from onnxprune.model_io import load_model
    from onnxprune.quant.reader import DatasetReader

    prepared = target.with_name("ort_prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    data = load_dataset(CALIBRATION, input_specs(load_model(source)))
    quantize_static(prepared, target, DatasetReader(data))


def ort_int4(source: Path, target: Path) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=32, is_symmetric=False)
    quantizer.process()
    quantizer.model.save_model_to_file(str(target))


def nncf_int8(source: Path, target: Path) -> None:
    import nncf

    model = nncf.quantize(
        onnx.load(str(source)),
        nncf.Dataset(_calibration_items()),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=128,
    )
    onnx.save(model, str(target))


def nncf_int4(source: Path, target: Path) -> None:
    import nncf

    # all_layers=True (4-bit embeddings too) writes a MatMulNBits fed by input_ids, which
    # onnxruntime refuses (NNCF 3.4); by default the embedding table gets NNCF's 8-bit backup.
    model = nncf.compress_weights(
        onnx.load(str(source)), mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, ratio=1.0
    )
    onnx.save(model, str(target))


PEERS = [
    ("onnxruntime quantize_dynamic (defaults)", "int8", ort_dynamic),
    ("onnxruntime quantize_static (defaults)", "int8", ort_static),
    ("onnxruntime MatMulNBits (asym, b32)", "int4", ort_int4),
    ("NNCF int8 static (transformer)", "int8", nncf_int8),
    ("NNCF int4 weights (asym, g32, int8 embeddings)", "int4", nncf_int4),
]


def _ffn_repaired(dense_path: Path, held: dict, dense: np.ndarray) -> Path:
    """A copy of bench/repair.py's repaired structured FFN 50% model (made when missing)."""
    import shutil

    made = WORK / "repair" / "torchscript" / "structured_ffn_50.repaired.onnx"
    if not made.exists():
        import repair

        config = next(c for c in repair.CONFIGS if c.label == "structured ffn 50%")
        repair.prepare(["torchscript"])
        validation = ["--validation", str(WORK / "repair_validation.npz")]
        repair.minilm_row("torchscript", dense_path, config, held, dense, validation)
    copy = OUT / "ffn50_repaired.onnx"
    shutil.copyfile(made, copy)
    return copy


def _pruned_rows(dense_path: Path, held: dict, dense: np.ndarray) -> list[dict]:
    pruned = _ffn_repaired(dense_path, held, dense)
    rows = [_measure(FFN_FLOAT, "pruned", dense_path, pruned, 0.0, held, dense)]
    out = OUT / "ffn50_repaired_static.onnx"
    args = ["--mode", "static", "--calibration", str(CALIBRATION), "--latency-runs", "0"]
    run = run_cli(["quantize", str(pruned), "-o", str(out), *args])
    seconds = run["report"]["quantization"]["seconds"]
    return [*rows, _measure(FFN_STATIC, "int8", dense_path, out, seconds, held, dense)]


def _measure(label, kind, dense_path, out, seconds, held, dense) -> dict:
    cosine = np.sum(dense * embeddings(out, held), axis=1)
    row = {
        "tool": label,
        "kind": kind,
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "size_ratio": _files_bytes(dense_path) / _files_bytes(out),
        "seconds": round(seconds, 1),
        "path": str(out),
    }
    print(_line(row), flush=True)
    return row


def _speeds(dense_path: Path, rows: list[dict], held: dict) -> dict:
    """Speed of every int8 row against the float model, all interleaved in one process."""
    timed = [r for r in rows if r["kind"] in ("int8", "pruned") and "path" in r]
    paths = [dense_path, *(Path(r["path"]) for r in timed)]
    runs = {}
    for batch, rounds, repeat in ((1, 40, 10), (16, 30, 1)):
        feed = {k: v[:batch] for k, v in held.items()}
        runs[f"b{batch}"] = result = measure(paths, feed, rounds=rounds, repeat=repeat)
        for row, timing in zip(timed, result["rows"][1:], strict=True):
            row[f"speed_b{batch}"] = timing["wall_ratio"]
            row[f"speed_b{batch}_cpu"] = timing["cpu_ratio"]
            row[f"wall_ms_b{batch}"] = timing["wall_ms"]
            row[f"cpu_ms_b{batch}"] = timing["cpu_ms"]
        print(f"batch {batch}: " + ", ".join(_speed(r, batch) for r in timed), flush=True)
    return runs


def _speed(row: dict, batch: int) -> str:
    return f"{row['tool']} {row[f'speed_b{batch}']:.2f}x (CPU {row[f'speed_b{batch}_cpu']:.2f}x)"


def _line(row: dict) -> str:
    speed = (
        f"  speed b1 {row['speed_b1']:.2f}x b16 {row['speed_b16']:.2f}x"
        if "speed_b1" in row
        else ""
    )
    return (
        f"{row['tool']:<44} {row['kind']}  cosine {row['cosine_mean']:.4f} "
        f"(min {row['cosine_min']:.4f})  size /{row['size_ratio']:.2f}  {row['seconds']:6.1f} s"
        + speed
    )


def _ours(dense_path: Path, held: dict, dense: np.ndarray) -> list[dict]:
    rows = []
    for label, kind, args in OURS:
        out = OUT / (label.split("(")[0].strip().replace(" ", "_").replace("%", "") + ".onnx")
        run = run_cli(["quantize", str(dense_path), "-o", str(out), *args, "--latency-runs", "0"])
        seconds = run["report"]["quantization"]["seconds"]
        rows.append(_measure(label, kind, dense_path, out, seconds, held, dense))
    return rows


def _peers(dense_path: Path, held: dict, dense: np.ndarray, skip_nncf: bool) -> list[dict]:
    rows = []
    for label, kind, tool in PEERS:
        if skip_nncf and label.startswith("NNCF"):
            continue
        out = OUT / (tool.__name__ + ".onnx")
        start = time.perf_counter()
        try:
            tool(dense_path, out)
            seconds = time.perf_counter() - start
            rows.append(_measure(label, kind, dense_path, out, seconds, held, dense))
        except Exception as error:  # a peer's failure is a result, not the end of the bench
            message = str(error).strip().splitlines()[-1][:300]
            rows.append({"tool": label, "kind": kind, "error": message})
            print(f"{label:<44} {kind}  failed: {message}", flush=True)

    return rows


def table(rows: list[dict]) -> str:
    """The issue's table: one line per tool, int8 and int4 columns, speed at batch 1 / 16
    (dense/quantized median wall time, thread-CPU time in brackets)."""
    lines = [
        "| | cosine | size | quantize time | speed b1 | speed b16 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['tool']} ({row['kind']}) | failed: {row['error']} | | | | |")
            continue
        speed = [
            f"{row[k]:.2f}x" + (f" (CPU {row[k + '_cpu']:.2f}x)" if k + "_cpu" in row else "")
            if k in row
            else "—"
            for k in ("speed_b1", "speed_b16")
        ]
        lines.append(
            f"| {row['tool']} ({row['kind']}) | {row['cosine_mean']:.4f} | "
            f"{row['size_ratio']:.2f}x | {row['seconds']:.1f} s | {speed[0]} | {speed[1]} |"
        )
    return "\n".join(lines)


def _previous_nncf_rows() -> list[dict]:
    path = HERE / "results" / "quantize_peers.json"
    if not path.exists():
        return []
    rows = [r for r in json.loads(path.read_text())["rows"] if r["tool"].startswith("NNCF")]
    for row in rows:
        row["reused"] = True
        line = _line(row) if "error" not in row else f"{row['tool']:<44} failed: {row['error']}"
        print(line + "  (previous run)", flush=True)
    return rows


def cnn_row() -> dict:
    model, out = FIXTURES / "digits_cnn.onnx", OUT / "digits_cnn_static.onnx"
    args = ["--mode", "static", "--calibration", str(FIXTURES / "digits_cnn-calibration.npz")]
    data = ["--data", str(FIXTURES / "digits_cnn-eval.npz"), "--latency-batch", "64"]
    quality = run_cli(["quantize", str(model), "-o", str(out), *args, *data])["report"]
    quality = quality["verification"]["quality"]
    row = {"accuracy_drop_pt": 100 * quality["accuracy_drop"], **quality}
    print(f"digits CNN static int8: accuracy drop {row['accuracy_drop_pt']:.2f} pt", flush=True)
    return {"model": "digits_cnn", "accuracy_drop_pt": row["accuracy_drop_pt"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skip-nncf",
        action="store_true",
        help="do not rerun NNCF; keep its rows from the last bench/results/quantize_peers.json",
    )
    options = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prepare()
    OUT.mkdir(parents=True, exist_ok=True)
    dense_path = WORK / "minilm_torchscript_default.onnx"
    if not dense_path.exists():
        import minilm_export

        minilm_export.export(WORK, attention="default")
    held = dict(np.load(WORK / "heldout.npz"))
    dense = embeddings(dense_path, held)
    rows = [*_ours(dense_path, held, dense), *_peers(dense_path, held, dense, options.skip_nncf)]
    rows += _pruned_rows(dense_path, held, dense)
    timing = _speeds(dense_path, rows, held)
    if options.skip_nncf:
        rows += _previous_nncf_rows()
    cnn = cnn_row()
    for row in rows:
        row.pop("path", None)
    document = {"model": "minilm/torchscript default attention", "rows": rows, "digits_cnn": cnn}
    path = write_results("quantize_peers", {**document, "timing": timing})
    print("\n" + table(rows))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
