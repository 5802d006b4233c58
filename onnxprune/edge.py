"""``export-edge``: an ORT-format package of a model, checked against itself and its origin.

A package folder holds ``model.onnx`` (and ``model.onnx.data`` for external data), ``model.ort``
(``ort_format.convert_to_ort``), ``required_operators.config``, ``report.json``, ``report.html``
and ``manifest.json`` (``package_manifest``: SHA-256 and size of every other file, versions,
options). ``export_edge`` writes the model files and returns the report; the caller writes the
report files and the manifest, so every write goes through the same staged outputs.

The parity check runs ``model.ort`` against ``model.onnx`` on the data: every element of every
output must satisfy ``|ort - onnx| <= atol + rtol * |onnx|``; the gate
``max_ort_parity_violations`` (limit 0) fails otherwise. With a baseline (the model before
compression), the package's model is also verified against it like ``verify``, with its gates.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.api import file_sha256
from onnxprune.batching import evaluation_batch
from onnxprune.data import Dataset
from onnxprune.errors import InputError
from onnxprune.model_io import load_model, model_files, save_model, uses_external_data
from onnxprune.ort_format import OrtOptions, convert_to_ort, write_operator_config
from onnxprune.report import build_report
from onnxprune.runtime import create_session, run_dataset
from onnxprune.verify import (
    Gates,
    VerifyOptions,
    evaluate_gates,
    prepare_dataset,
    prepare_verification,
    verify_models,
)

__all__ = [
    "EdgeOptions",
    "export_edge",
    "package_files",
    "package_manifest",
    "render_package",
]

MODEL, ORT_MODEL, CONFIG = "model.onnx", "model.ort", "required_operators.config"
REPORT, HTML, MANIFEST = "report.json", "report.html", "manifest.json"
# Unstructured zeros above this fraction of the weights get a note: no speed from them.
ZERO_NOTE = 0.1


@dataclass(frozen=True)
class EdgeOptions:
    """The ORT conversion, the parity tolerance, and whether the package has an HTML report."""

    ort: OrtOptions = field(default_factory=OrtOptions)
    atol: float = 1e-4
    rtol: float = 1e-3
    html: bool = True

    def validate(self) -> None:
        self.ort.validate()
        if not (self.atol >= 0 and self.rtol >= 0):
            raise InputError("--parity-atol and --parity-rtol must be >= 0")


def package_files(folder: str | os.PathLike, external_data: bool, html: bool) -> list[Path]:
    """Every file a package in ``folder`` consists of, the manifest last."""
    names = [MODEL, *([MODEL + ".data"] if external_data else []), ORT_MODEL, CONFIG, REPORT]
    return [Path(folder) / n for n in [*names, *([HTML] if html else []), MANIFEST]]


def _parity(onnx_path: Path, ort_path: Path, dataset: Dataset, options, batch: int) -> dict:
    """Run both files on the data; count the elements outside the tolerance per output."""
    reference = run_dataset(create_session(onnx_path), dataset, batch)
    converted = run_dataset(create_session(ort_path), dataset, batch)
    outputs = {}
    for name, expected in reference.items():
        got, want = converted[name].astype(np.float64), expected.astype(np.float64)
        diff = np.abs(got - want)
        outside = ~(diff <= options.atol + options.rtol * np.abs(want))
        outputs[name] = {
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "elements": int(diff.size),
            "violations": int(outside.sum()),
        }
    return {
        "data": dataset.source,
        "synthetic": dataset.synthetic,
        "samples": dataset.samples,
        "atol": options.atol,
        "rtol": options.rtol,
        "outputs": outputs,
        "note": "checked on this machine's CPU "
        f"({platform.machine() or 'unknown'}), with onnxruntime {ort.__version__}",
    }


def _parity_gate(parity: dict) -> dict:
    violations = sum(o["violations"] for o in parity["outputs"].values())
    return {
        "gate": "max_ort_parity_violations",
        "limit": 0,
        "value": violations,
        "passed": violations == 0,
        "note": f"|ort - onnx| <= {parity['atol']:g} + {parity['rtol']:g} * |onnx|",
    }


def _zero_fraction(path: Path) -> float:
    proto = onnx.load(str(path))
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if len(t.dims) >= 2]
    elements = sum(w.size for w in weights if w.dtype.kind == "f")
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights if w.dtype.kind == "f")
    return zeros / elements if elements else 0.0


def _notes(options: EdgeOptions, zeros: float) -> list[str]:
    notes = []
    if zeros > ZERO_NOTE:
        notes.append(
            f"{100 * zeros:.1f}% of the float weights are zero (unstructured sparsity): "
            "onnxruntime's CPU kernels do not skip zeros, so they give no speed; the .ort stores "
            "them dense (they only shrink a compressed download). Use structured pruning for "
            "speed."
        )
    if not options.ort.nchwc:
        notes.append("NCHWc layout transform off: the .ort is not tied to this machine's CPU")
    notes.append(
        "onnxruntime does not serialise .ort files byte for byte the same on every run; "
        "manifest.json pins this package's hashes"
    )
    return notes


def _file_entry(name: str, path: Path) -> dict:
    return {"name": name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _verification(
    baseline: Path | None, candidate: Path, verify_options: VerifyOptions, dataset, gates
) -> tuple[dict | None, list[dict]]:
    if baseline is None:
        return None, []
    verification = verify_models(baseline, candidate, verify_options, dataset)
    return verification, evaluate_gates(gates, verification)


def export_edge(
    model: str | os.PathLike,
    folder: str | os.PathLike,
    staged: Callable[[Path], Path],
    options: EdgeOptions,
    verify_options: VerifyOptions,
    baseline: str | os.PathLike | None = None,
    gates: Gates | None = None,
) -> dict:
    """Write ``model.onnx``, ``model.ort`` and ``required_operators.config`` of ``model`` (each
    to ``staged(folder / name)``), check parity, verify against ``baseline``; return the report.

    Raises:
        InputError: bad options or data, gates without a baseline, a model onnxruntime cannot
            convert.
    """
    options.validate()
    if gates is not None and gates.active and baseline is None:
        raise InputError("gates compare with the original model: give --baseline ORIGINAL.onnx")
    if baseline is None:
        dataset = prepare_dataset(model, verify_options)
    else:
        gates, dataset = prepare_verification(baseline, verify_options, gates)
    folder = Path(folder)
    working = load_model(model)
    onnx_path = staged(folder / MODEL)
    written = save_model(
        working,
        onnx_path,
        protected=model_files(model, working),
        external_data=uses_external_data(working),
    )
    ort_path, config_path = staged(folder / ORT_MODEL), staged(folder / CONFIG)
    convert_to_ort(onnx_path, ort_path, options.ort)
    operators = write_operator_config(ort_path, config_path)
    batch = evaluation_batch(verify_options.batch_size, {"model": onnx_path})[0]
    parity = _parity(onnx_path, ort_path, dataset, options, batch)
    verification, gate_results = _verification(
        None if baseline is None else Path(baseline), onnx_path, verify_options, dataset, gates
    )
    report = build_report(
        "export-edge",
        model,
        folder,
        verification=verification,
        gates=[*gate_results, _parity_gate(parity)],
    )
    files = [*(p.name for p in written), ORT_MODEL, CONFIG]
    zeros = _zero_fraction(onnx_path)
    report["edge"] = {
        **options.ort.describe(),
        "files": [_file_entry(name, staged(folder / name)) for name in files],
        "operators": operators,
        "parity": parity,
        "zero_weight_fraction": zeros,
        "notes": _notes(options, zeros),
    }
    return report


def package_manifest(report: dict, files: dict[str, Path], options: dict) -> dict:
    """The manifest of the package ``report`` describes: the input model's hash, versions,
    options, and every file's size and hash (``files`` maps package names to where they are
    now; the manifest does not list itself)."""
    model = report["model"]
    return {
        "schema_version": 1,
        "tool": report["tool"],
        "versions": {
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "input_model": {"name": Path(model).name, "sha256": file_sha256(model)},
        "options": options,
        "files": [_file_entry(name, path) for name, path in files.items()],
    }


def render_package(report: dict, files: list[Path]) -> list[str]:
    """The package in a few terminal lines: settings, every file's size, parity, notes."""
    edge = report["edge"]
    sizes = {entry["name"]: entry["bytes"] for entry in edge["files"]}
    for path in files:
        if path.name not in sizes and path.is_file():
            sizes[path.name] = path.stat().st_size
    nchwc = "on" if edge["nchwc_layout"] else "off"
    lines = [
        f"Edge package {report['output']} ({edge['platform']}, {edge['optimization_style']} "
        f"optimisation, NCHWc {nchwc}; onnxruntime {edge['onnxruntime']}):"
    ]
    lines += [f"  {name:<28} {size:>12,} bytes" for name, size in sizes.items()]
    operators = sum(len(ops) for ops in edge["operators"].values())
    lines.append(f"  operators in required_operators.config: {operators}")
    parity = edge["parity"]
    for name, output in parity["outputs"].items():
        lines.append(
            f"  parity .ort vs .onnx, output '{name}' on {parity['samples']} samples: max abs "
            f"diff {output['max_abs_diff']:.3g}, {output['violations']} of {output['elements']} "
            f"elements beyond {parity['atol']:g} + {parity['rtol']:g}*|onnx|"
        )
    lines += [f"  note: {note}" for note in edge["notes"]]
    return lines
