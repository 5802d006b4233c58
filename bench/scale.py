"""Time and peak memory of every command against model size, on synthetic decoder stacks.

Each model is a seeded stack of ``LayerNorm → MatMul(d,4d) → GELU → MatMul(4d,d) → residual Add``
blocks, each followed by a ``d x d`` projection with its own residual Add, float32 weights in one
external data file. The weights are written to the data file one tensor at a time, so building
a 4 GB model never holds more than one tensor. Every command runs in a child process (one at a
time) whose peak RSS comes from ``os.wait4`` (that child's own ``ru_maxrss``). Next to
onnxprune's commands: onnx-ir load+save (the I/O floor) and onnxruntime's own quantizers.

    python bench/scale.py --sizes 100,500 --commands inspect,magnitude
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx_ir as ir

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "scale"
D_MODEL = 1024
SEQ = 32
SAMPLES = 64
OPSET = 20

_DATA = "--calibration {data}"
COMMANDS = {  # argument strings, split on spaces
    "inspect": "inspect {model} --json",
    "magnitude": "prune {model} -o {out} --method magnitude --json",
    "wanda": f"prune {{model}} -o {{out}} --method wanda {_DATA} --json",
    "sparsegpt": f"prune {{model}} -o {{out}} --method sparsegpt {_DATA} --json",
    "ffn_reconstruct": "prune {model} -o {out} --structured --target ffn --target-sparsity 0.5 "
    f"{_DATA} --reconstruct --json",
    "quantize_dynamic": "quantize {model} -o {out} --mode dynamic --data {data} --json",
    "quantize_int4": "quantize {model} -o {out} --mode int4 --data {data} --json",
    # without --data: the row, beside onnxruntime's quantizers (synthetic-input check)
    "quantize_dynamic_nodata": "quantize {model} -o {out} --mode dynamic --json",
    "quantize_int4_nodata": "quantize {model} -o {out} --mode int4 --json",
    "compress": "compress {model} -o {out} --target-sparsity 0.5 --data {data} --json",
}

_PEERS = {
    "ir_load_save": "import onnx_ir as ir; m = ir.load('{model}'); "
    "ir.save(m, '{out}', external_data='{out_name}.data')",
    "ort_quantize_dynamic": "from onnxruntime.quantization import quantize_dynamic as q; "
    "q('{model}', '{out}', use_external_data_format=True)",
    # onnxprune's --mode dynamic default: int8 weights per output channel
    "ort_quantize_dynamic_per_channel": "from onnxruntime.quantization import quantize_dynamic "
    "as q; q('{model}', '{out}', per_channel=True, use_external_data_format=True)",
    "ort_matmulnbits": "import onnx; from onnxruntime.quantization.matmul_nbits_quantizer "
    "import MatMulNBitsQuantizer as Q; m = onnx.load('{model}'); q = Q(m, bits=4, "
    "block_size=32); q.process(); q.model.save_model_to_file('{out}', True)",
}


class _DataWriter:
    """Appends seeded tensors to one external data file and returns ``ir.ExternalTensor``s."""

    def __init__(self, folder: Path, location: str, seed: int) -> None:
        self.folder, self.location = folder, location
        self.handle = open(folder / location, "wb")
        self.rng = np.random.default_rng(seed)

    def tensor(self, name: str, shape: tuple[int, ...], scale: float, mean: float = 0.0):
        array = (mean + scale * self.rng.standard_normal(shape, dtype=np.float32)).astype(
            np.float32
        )
        offset = self.handle.tell()
        self.handle.write(array.tobytes())
        self.handle.write(b"\0" * (-self.handle.tell() % 64))  # aligned like onnx-ir writes
        return ir.Value(
            name=name,
            shape=ir.Shape(shape),
            type=ir.TensorType(ir.DataType.FLOAT),
            const_value=ir.ExternalTensor(
                self.location,
                offset,
                array.nbytes,
                ir.DataType.FLOAT,
                shape=ir.Shape(shape),
                name=name,
                base_dir=self.folder,
            ),
        )

    def close(self) -> None:
        self.handle.close()


def _block(graph: ir.Graph, x: ir.Value, index: int, data: _DataWriter, d: int) -> ir.Value:
    def node(op, inputs, width=d, **attributes):
        made = ir.node(op, inputs, attributes=attributes, name=f"l{index}.{op}{len(graph)}")
        graph.append(made)
        made.outputs[0].name = f"{made.name}.out"
        made.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        made.outputs[0].shape = ir.Shape(["batch", "seq", width])
        return made.outputs[0]

    def weight(name, shape, scale, mean=0.0):
        value = data.tensor(f"l{index}.{name}", shape, scale, mean)
        graph.register_initializer(value)
        return value

    normed = node(
        "LayerNormalization",
        [x, weight("ln.scale", (d,), 0.02, 1.0), weight("ln.bias", (d,), 0.02)],
        axis=-1,
    )
    up = node(
        "Add",
        [
            node("MatMul", [normed, weight("fc1.weight", (d, 4 * d), d**-0.5)], 4 * d),
            weight("fc1.bias", (4 * d,), 0.02),
        ],
        4 * d,
    )
    down = node(
        "Add",
        [
            node(
                "MatMul",
                [
                    node("Gelu", [up], 4 * d),
                    weight("fc2.weight", (4 * d, d), 0.1 * (4 * d) ** -0.5),
                ],
            ),
            weight("fc2.bias", (d,), 0.02),
        ],
    )
    x = node("Add", [x, down])
    projected = node("MatMul", [x, weight("proj.weight", (d, d), 0.1 * d**-0.5)])
    return node("Add", [x, projected])


def build(
    size_mb: float, folder: Path = WORK, d: int = D_MODEL, seed: int = 0, samples: int = SAMPLES
) -> Path:
    """Write ``stack<size_mb>.onnx`` (+ ``.data``, + calibration ``.npz``); return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stack{size_mb}.onnx"
    if path.is_file():
        return path
    layers = max(1, round(size_mb * 2**20 / (4 * (9 * d * d + 7 * d))))
    x = ir.Value(
        name="x", shape=ir.Shape(["batch", "seq", d]), type=ir.TensorType(ir.DataType.FLOAT)
    )
    graph = ir.Graph([x], [], nodes=[], name="stack", opset_imports={"": OPSET})
    data = _DataWriter(folder, path.name + ".data", seed)
    try:
        for index in range(layers):
            x = _block(graph, x, index, data, d)
    finally:
        data.close()
    x.name = "y"
    graph.outputs.append(x)
    ir.save(ir.Model(graph, ir_version=10, producer_name="bench/scale.py"), path)
    samples = np.random.default_rng(seed + 1).standard_normal((samples, SEQ, d), dtype=np.float32)
    np.savez(folder / f"stack{size_mb}.npz", x=samples)
    return path


def run_child(argv: list[str], env: dict | None = None, cwd: Path = HERE.parent) -> dict:
    """Run ``argv`` as a child; its wall time, its own peak RSS (``wait4``) and exit code."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=err, env={**os.environ, **(env or {})}
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "seconds": round(seconds, 2),
            "peak_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "exit": child.returncode,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def measure(size_mb: int, name: str, folder: Path = WORK, repo: Path = HERE.parent) -> dict:
    """One command (a key of ``COMMANDS`` or a peer) on the model of ``size_mb``."""
    model = build(size_mb, folder)
    out = folder / "out" / f"stack{size_mb}.{name}.onnx"
    out.parent.mkdir(exist_ok=True)
    fields = {"model": model, "out": out, "out_name": out.name, "data": model.with_suffix(".npz")}
    if name in COMMANDS:
        argv = [
            sys.executable,
            "-m",
            "cli.main",
            *(a.format(**fields) for a in COMMANDS[name].split()),
        ]
    else:
        argv = [sys.executable, "-c", _PEERS[name].format(**fields)]
    result = run_child(argv, {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}, repo)
    for produced in out.parent.glob(out.name + "*"):
        produced.unlink()
    row = {
        "size_mb": size_mb,
        "command": name,
        "seconds": result["seconds"],
        "cpu_seconds": result["cpu_seconds"],
        "peak_mb": result["peak_mb"],
        "exit": result["exit"],
    }
    if result["exit"] not in (0, 1):
        row["error"] = result["stderr"].strip().splitlines()[-1:] or ["?"]
    row.update(_stage_seconds(result["stdout"]))
    return row


def _stage_seconds(stdout: str) -> dict:
    """The quantization step's own seconds and the verification samples from a JSON report."""
    try:
        report = json.loads(stdout)
    except ValueError:
        return {}
    if not isinstance(report, dict):
        return {}
    row = {}
    seconds = (report.get("quantization") or {}).get("seconds")
    if seconds is not None:
        row["quantize_step_seconds"] = seconds
    data = (report.get("verification") or {}).get("data") or {}
    if "samples" in data:
        row["verify_samples"] = data["samples"]
        row["verify_synthetic"] = data.get("synthetic")
    return row


def table(before: Path, after: Path) -> str:
    """A markdown table of two result files (JSON lines): time and peak memory per command."""
    rows: dict[tuple, dict] = {}
    for label, path in (("before", before), ("after", after)):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            rows.setdefault((row["size_mb"], row["command"]), {})[label] = row
    lines = [
        "| MB | command | before s (cpu s) | before peak MB | after s (cpu s) | after peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for (size, command), pair in sorted(rows.items()):
        cells = []
        for label in ("before", "after"):
            row = pair.get(label)
            if row is None:
                cells += ["—", "—"]
                continue
            cpu = f" ({row['cpu_seconds']:.0f})" if "cpu_seconds" in row else ""
            cells += [f"{row['seconds']:.1f}{cpu}", f"{row['peak_mb']:.0f}"]
        lines.append(f"| {size} | {command} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,500")
    parser.add_argument("--commands", default=",".join([*_PEERS, *COMMANDS]))
    parser.add_argument("--results", type=Path, default=None, help="Append JSON lines here.")
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="Checkout to measure.")
    parser.add_argument("--table", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument(
        "--repeat", type=int, default=1, help="Run the commands N times, interleaved."
    )
    args = parser.parse_args()
    if args.table:
        print(table(*args.table))
        return
    print(f"{'MB':>6} {'command':<22} {'seconds':>9} {'cpu s':>9} {'peak MB':>9} exit", flush=True)
    rounds = [
        (int(size), name)
        for size in args.sizes.split(",")
        for _ in range(args.repeat)
        for name in args.commands.split(",")
    ]
    for size, name in rounds:
        row = measure(size, name, repo=args.repo.resolve())
        print(
            f"{size:>6} {name:<22} {row['seconds']:>9.1f} {row['cpu_seconds']:>9.1f} "
            f"{row['peak_mb']:>9.0f} {row['exit']} {row.get('error', [''])[0]}",
            flush=True,
        )
        if args.results is not None:
            with open(args.results, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
