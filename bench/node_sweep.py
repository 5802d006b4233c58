"""Run inspect, prune and compress over ONNX's backend node-test models: zero internal errors.

The ``onnx`` package generates its backend node tests (close to two thousand single-operator
models) from ``onnx.backend.test.case.node``. Each is written to a temporary folder and run
through the public API the way the command line runs it; an outcome is ``ok`` (exit 0),
``refused`` (an ``OnnxpruneError``: exit 2 with one line) or ``internal`` (anything else:
exit 3, a bug). Models that the installed onnxruntime itself cannot load are counted apart
(``runtime-unsupported``): onnxprune refuses them with exit 2 as well.

Usage: ``python bench/node_sweep.py [--every N] [--json OUT]``; prints the tallies per command
and every internal error with its first line. ``tests/test_node_sweep.py`` runs a sample.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import onnx

from cli.logs import configure_logging
from onnxprune import PruneOptions, VerifyOptions, compress_file, inspect_model, prune_file
from onnxprune.errors import OnnxpruneError
from onnxprune.runtime import create_session

__all__ = ["node_cases", "run_case", "sweep"]

COMMANDS = ("inspect", "prune", "compress")


def _frozen(model: onnx.ModelProto, inputs: list) -> onnx.ModelProto | None:
    """The model with every input but the first turned into an initializer holding the test's
    data, so weight inputs (Conv, MatMul, Gemm, LSTM ...) become prunable weights."""
    if len(model.graph.input) < 2 or len(inputs) != len(model.graph.input):
        return None
    frozen = onnx.ModelProto()
    frozen.CopyFrom(model)
    for value, array in list(zip(model.graph.input, inputs, strict=True))[1:]:
        if not hasattr(array, "dtype") or array.dtype.kind not in "fiub":
            return None
        frozen.graph.initializer.append(onnx.numpy_helper.from_array(array, value.name))
        frozen.graph.input.remove(next(i for i in frozen.graph.input if i.name == value.name))
    return frozen


def node_cases(every: int = 1) -> list[tuple[str, onnx.ModelProto]]:
    """(name, model) of every ``every``-th backend node test, sorted by name, each followed by
    its frozen variant (``<name>+frozen``) where it has one."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = sorted(collect_testcases(None), key=lambda case: case.name)
    result = []
    for case in cases[::every]:
        if case.model is None:
            continue
        result.append((case.name, case.model))
        frozen = _frozen(case.model, case.data_sets[0][0]) if case.data_sets else None
        if frozen is not None:
            result.append((f"{case.name}+frozen", frozen))
    return result


def _command(command: str, path: Path, folder: Path) -> None:
    fast = VerifyOptions(latency_runs=0, synthetic_samples=2)
    if command == "inspect":
        inspect_model(path)
    elif command == "prune":
        prune_file(path, folder / "pruned.onnx", PruneOptions(0.5, min_fan_in=0))
    else:
        compress_file(path, folder / "compressed.onnx", PruneOptions(0.5, min_fan_in=0), fast)


def run_case(model: onnx.ModelProto, folder: Path) -> dict[str, tuple[str, str]]:
    """command -> (outcome, first line of the error or '')."""
    path = folder / "model.onnx"
    onnx.save(model, path)
    try:
        create_session(path)
        loads = True
    except OnnxpruneError:
        loads = False
    results = {}
    for command in COMMANDS:
        try:
            _command(command, path, folder)
            results[command] = ("ok", "")
        except OnnxpruneError as error:
            outcome = "refused" if loads else "runtime-unsupported"
            results[command] = (outcome, str(error).splitlines()[0] if str(error) else "")
        except Exception as error:  # the sweep's purpose: count every internal error
            detail = traceback.format_exception_only(error)[-1].strip()
            results[command] = ("internal", detail)
    return results


def sweep(every: int = 1) -> dict:
    """Tallies per command and the internal errors, over every ``every``-th node test."""
    tallies = {command: Counter() for command in COMMANDS}
    internal = []
    cases = node_cases(every)
    for name, model in cases:
        with tempfile.TemporaryDirectory(prefix="onnxprune-node-") as folder:
            for command, (outcome, detail) in run_case(model, Path(folder)).items():
                tallies[command][outcome] += 1
                if outcome == "internal":
                    internal.append({"case": name, "command": command, "error": detail})
    return {
        "cases": len(cases),
        "every": every,
        "tallies": {c: dict(sorted(t.items())) for c, t in tallies.items()},
        "internal": internal,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="run every N-th case")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    configure_logging(debug=False)
    result = sweep(args.every)
    print(f"{result['cases']} node-test models (every {args.every})")
    print(f"{'command':<10} {'ok':>6} {'refused':>8} {'ort-unsupported':>16} {'internal':>9}")
    for command, tally in result["tallies"].items():
        print(
            f"{command:<10} {tally.get('ok', 0):>6} {tally.get('refused', 0):>8} "
            f"{tally.get('runtime-unsupported', 0):>16} {tally.get('internal', 0):>9}"
        )
    for item in result["internal"]:
        print(f"internal: {item['case']} {item['command']}: {item['error']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["internal"] else 0


if __name__ == "__main__":
    sys.exit(main())
